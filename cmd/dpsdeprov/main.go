// Command dpsdeprov asks the deprovisioning app's Operations function what happened to a
// device, plans and applies requests, approves or denies operations held for approval, and
// reads the cleanup's findings.
// See docs/app.md ("The operator CLI").
//
//	dpsdeprov status sensor-042
//	dpsdeprov show op-3f2a… [--watch]
//	dpsdeprov plan compromised sensor-042 --reason "EDR alert"
//	dpsdeprov apply compromised sensor-042 --reason "EDR alert"
//	dpsdeprov approve op-3f2a… --reason "CA key leak confirmed, INC-2041" [--by alice@contoso.com]
//	dpsdeprov deny op-3f2a… --reason "false positive"
//	dpsdeprov findings --since 7d --pass drift
//
// It finds the app at --url (or $DPSDEPROV_URL; by default the local `make run` stack named in
// .demo/devhost.json) and signs in with the caller's Entra ID token for --scope (or
// $DPSDEPROV_SCOPE), from azidentity's DefaultAzureCredential, the Azure CLI's sign-in
// (--credential cli) or a token at hand (--credential token, $DPSDEPROV_ACCESS_TOKEN), on the
// signed-in routes; or it sends the Operations function's key (--key or $DPSDEPROV_KEY) on the
// key routes. --json prints the app's answers as JSON for scripts.
//
// Exit status: 0 done, 1 refused or failed (the message says what to do), 2 usage, 3 the
// operation is held for approval.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
