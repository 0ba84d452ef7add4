// Package deprovision is the domain of the project: it turns a request ("device sensor-042 is
// compromised") into the right deprovisioning path for that device's enrollment kind and
// attestation, and carries it out.
//
// The package is shaped like Terraform's plan/apply:
//
//   - [Resolve] reads DPS (and, where needed, the hub) and classifies the device;
//   - [PlanFor] is a pure function of the resolved device, the request and the device's journal
//     row (the policy matrix of docs/policy.md): it returns an ordered [Plan] of steps, each with
//     the reason it was chosen, that a person can read before anything changes, or a [Refusal];
//   - the [Engine] journals the request and applies the plan step by step, DPS before hub, each
//     step idempotent and ETag-safe, journaling before and after every step so that a crash or a
//     redelivery resumes at the first unfinished step. Group-wide intents page the group's
//     registration states and fan the members out through a [WorkQueue] in batches, which
//     the GroupWork workers apply ([Engine.ApplyBatch]).
//
// Dependencies point inward: this package imports no SDK and no transport. It defines the small
// interfaces it needs ([Enrollments], [Registrations], [Devices], [Journal], [Clock]); adapters
// elsewhere make the Azure clients and the Table Storage journal satisfy them.
package deprovision
