package fleet_test

import (
	"fmt"
	"math/rand/v2"
	"strings"

	d "dpsdeprov/deprovision"
)

// The hubs every generated fleet spreads over.
var hubs = []string{"hub1.azure-devices.net", "hub2.azure-devices.net", "hub3.azure-devices.net"}

// caSpec is one CA certificate of a hierarchy; Parent is the index of its issuer (-1: a root).
type caSpec struct{ Parent int }

// Group kinds.
const (
	gInline = "x509"         // X.509 group with the CA as its signing certificate
	gRef    = "x509-ref"     // X.509 group naming the CA, registered and verified in DPS
	gSK     = "symmetricKey" // symmetric-key group with two keys
)

// groupSpec is one enrollment group. Every CA has at most one group.
type groupSpec struct {
	Kind    string
	CA      int // X.509 groups
	Enabled bool
	Edge    bool // capabilities.iotEdge
}

// Device kinds.
const (
	kX509Member = "x509-member" // provisions through the nearest X.509 group of its chain
	kSKMember   = "sk-member"   // provisions through its symmetric-key group
	kX509       = "x509"        // individual X.509 enrollment (its chain may pass a group)
	kSK         = "sk"          // individual symmetric-key enrollment, keys of its own
	kTPM        = "tpm"         // individual TPM enrollment, never provisioned (see tpm.go)
)

// devSpec is one device.
type devSpec struct {
	Kind  string
	CA    int // the issuer of an X.509 device's leaf
	Group int // a symmetric-key member's group
	Hub   int // an individual enrollment's hub
	// Block is "x509" or "sk" when an operator blocked this member by hand after it
	// provisioned (a disabled individual enrollment, Microsoft's recipe).
	Block string
	// Moved is the hub an operator moved this member to by hand (an enabled individual
	// enrollment pointed there, and the device re-provisioned), or -1.
	Moved int
	// Tags and Scope give the hub identity a twin tag and a device scope after provisioning.
	Tags, Scope bool
}

// evSpec is one step of the sequence: an event, a redelivery, or a device provisioning again.
type evSpec struct {
	Intent d.Intent
	Device int    // device index; -1: a registration id no device has
	Group  int    // group-wide: the group; device events: the group hint (-1 none)
	Cert   string // "", "leaf", "chain" or "other" (another device's leaf)
	Action d.Action
	Target int // moved: the target hub
	At     int // minutes after the fleet's epoch (events arrive late and out of order)
	// Again >= 0 makes this step a redelivery of step Again.
	Again int
	// Reprovision makes this step the device provisioning again with its credential.
	Reprovision bool
}

// Case is one generated fleet and its sequence.
type Case struct {
	Seed    uint64
	CAs     []caSpec
	Groups  []groupSpec
	Devices []devSpec
	Steps   []evSpec
}

func (c *Case) devID(i int) string {
	if i < 0 {
		return "ghost-device"
	}
	return fmt.Sprintf("dev-%02d", i)
}

func (c *Case) groupID(i int) string { return fmt.Sprintf("group-%02d", i) }

func (c *Case) caName(i int) string { return fmt.Sprintf("ca-%02d", i) }

// groupOfCA returns the group on CA i, or -1.
func (c *Case) groupOfCA(i int) int {
	for g, gs := range c.Groups {
		if gs.Kind != gSK && gs.CA == i {
			return g
		}
	}
	return -1
}

// nearestGroup is the X.509 group DPS would pick for a leaf issued by CA ca: the first group
// walking up the chain from the leaf ("X.509 certificate attestation"), or -1.
func (c *Case) nearestGroup(ca int) int {
	for i := ca; i >= 0; i = c.CAs[i].Parent {
		if g := c.groupOfCA(i); g >= 0 {
			return g
		}
	}
	return -1
}

// isMember reports whether device i provisioned through a group.
func (c *Case) isMember(i int) bool {
	k := c.Devices[i].Kind
	return k == kX509Member || k == kSKMember
}

// memberGroup is the group a member provisioned through at first.
func (c *Case) memberGroup(i int) int {
	dv := c.Devices[i]
	switch dv.Kind {
	case kX509Member:
		return c.nearestGroup(dv.CA)
	case kSKMember:
		return dv.Group
	}
	return -1
}

func (c *Case) x509Device(i int) bool {
	return i >= 0 && (c.Devices[i].Kind == kX509Member || c.Devices[i].Kind == kX509)
}

// Generate builds the case of seed. The structure is a function of the seed alone; key
// material of certificates is random (crypto ignores custom randomness), which no decision
// depends on.
func Generate(seed uint64) *Case {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	c := &Case{Seed: seed}
	// CA hierarchies: one or two roots, each one to three levels deep, sometimes a branch.
	for range 1 + r.IntN(2) {
		parent := -1
		for depth := range 1 + r.IntN(3) {
			c.CAs = append(c.CAs, caSpec{Parent: parent})
			me := len(c.CAs) - 1
			if depth == 1 && r.IntN(3) == 0 {
				c.CAs = append(c.CAs, caSpec{Parent: parent}) // a sibling intermediate
			}
			parent = me
		}
	}
	for i := range c.CAs {
		if r.IntN(10) < 6 {
			kind := gInline
			if r.IntN(2) == 0 {
				kind = gRef
			}
			c.Groups = append(c.Groups, groupSpec{Kind: kind, CA: i, Enabled: r.IntN(10) != 0, Edge: r.IntN(5) == 0})
		}
	}
	for range r.IntN(3) {
		c.Groups = append(c.Groups, groupSpec{Kind: gSK, CA: -1, Enabled: r.IntN(10) != 0, Edge: r.IntN(5) == 0})
	}
	var skGroups, memberCAs []int
	for g, gs := range c.Groups {
		if gs.Kind == gSK {
			skGroups = append(skGroups, g)
		}
	}
	for ca := range c.CAs {
		if c.nearestGroup(ca) >= 0 {
			memberCAs = append(memberCAs, ca)
		}
	}
	n := 3 + r.IntN(6)
	for range n {
		kinds := []string{kX509, kSK, kTPM}
		if len(memberCAs) > 0 {
			kinds = append(kinds, kX509Member, kX509Member)
		}
		if len(skGroups) > 0 {
			kinds = append(kinds, kSKMember, kSKMember)
		}
		dv := devSpec{Kind: kinds[r.IntN(len(kinds))], CA: r.IntN(len(c.CAs)), Group: -1, Hub: r.IntN(len(hubs)), Moved: -1,
			Tags: r.IntN(2) == 0, Scope: r.IntN(5) == 0}
		switch dv.Kind {
		case kX509Member:
			dv.CA = memberCAs[r.IntN(len(memberCAs))]
		case kSKMember:
			dv.Group = skGroups[r.IntN(len(skGroups))]
		}
		if dv.Kind == kX509Member || dv.Kind == kSKMember {
			switch x := r.IntN(10); {
			case x < 1 && dv.Kind == kX509Member:
				dv.Block = "x509"
			case x < 2:
				dv.Block = "sk"
			case x < 3:
				dv.Moved = r.IntN(len(hubs))
			}
		}
		c.Devices = append(c.Devices, dv)
	}
	at := 0
	for i := range 1 + r.IntN(6) {
		at += 1 + r.IntN(10)
		ev := evSpec{Device: r.IntN(n), Group: -1, Target: r.IntN(len(hubs)), At: at, Again: -1}
		if r.IntN(7) == 0 {
			ev.At = max(0, at-1-r.IntN(30)) // late: it happened before earlier events
		}
		switch x := r.IntN(20); {
		case x == 0 && i > 0 && !c.Steps[indexOfOriginal(c.Steps, i-1)].Reprovision:
			j := indexOfOriginal(c.Steps, i-1-r.IntN(i))
			if !c.Steps[j].Reprovision {
				ev = c.Steps[j]
				ev.Again = j
				c.Steps = append(c.Steps, ev)
				continue
			}
			fallthrough
		case x <= 2:
			ev.Reprovision = true
			c.Steps = append(c.Steps, ev)
			continue
		case x <= 5 && len(c.Groups) > 0:
			ev.Intent = []d.Intent{d.IntentGroupCompromised, d.IntentGroupRetired}[r.IntN(2)]
			ev.Group = r.IntN(len(c.Groups))
			ev.Device = -1
		default:
			ev.Intent = []d.Intent{d.IntentCompromised, d.IntentStolen, d.IntentLost, d.IntentRecovered, d.IntentSold, d.IntentMoved, d.IntentRetired}[r.IntN(7)]
			if r.IntN(20) == 0 {
				ev.Device = -1
			}
			if x := r.IntN(10); x < 3 && ev.Device >= 0 {
				ev.Group = c.memberGroup(ev.Device) // the right hint (-1 for an individual)
			} else if x < 4 && len(c.Groups) > 0 {
				ev.Group = r.IntN(len(c.Groups)) // any group, maybe the wrong one
			}
			if c.x509Device(ev.Device) {
				ev.Cert = []string{"", "leaf", "chain", "chain"}[r.IntN(4)]
			} else if r.IntN(20) == 0 {
				ev.Cert = "other"
			}
			switch r.IntN(10) {
			case 0:
				ev.Action = d.ActionDisable
			case 1:
				ev.Action = d.ActionDelete
			}
		}
		c.Steps = append(c.Steps, ev)
	}
	return c
}

// indexOfOriginal follows redeliveries back to the step first delivered.
func indexOfOriginal(steps []evSpec, i int) int {
	for steps[i].Again >= 0 {
		i = steps[i].Again
	}
	return i
}

// String renders the case for a person: the fleet, then the sequence.
func (c *Case) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d\n", c.Seed)
	for i, ca := range c.CAs {
		p := "root"
		if ca.Parent >= 0 {
			p = "issued by " + c.caName(ca.Parent)
		}
		fmt.Fprintf(&b, "  %s %s\n", c.caName(i), p)
	}
	for i, g := range c.Groups {
		fmt.Fprintf(&b, "  %s %s", c.groupID(i), g.Kind)
		if g.Kind != gSK {
			fmt.Fprintf(&b, " on %s", c.caName(g.CA))
		}
		if !g.Enabled {
			b.WriteString(" disabled")
		}
		if g.Edge {
			b.WriteString(" edge")
		}
		b.WriteString("\n")
	}
	for i, dv := range c.Devices {
		fmt.Fprintf(&b, "  %s %s", c.devID(i), dv.Kind)
		switch dv.Kind {
		case kX509Member, kX509:
			fmt.Fprintf(&b, " leaf from %s", c.caName(dv.CA))
		case kSKMember:
			fmt.Fprintf(&b, " of %s", c.groupID(dv.Group))
		}
		if dv.Kind == kX509 || dv.Kind == kSK || dv.Kind == kTPM {
			fmt.Fprintf(&b, " in %s", hubs[dv.Hub])
		}
		if dv.Block != "" {
			fmt.Fprintf(&b, ", blocked by hand (%s)", dv.Block)
		}
		if dv.Moved >= 0 {
			fmt.Fprintf(&b, ", moved by hand to %s", hubs[dv.Moved])
		}
		if dv.Tags {
			b.WriteString(", tags")
		}
		if dv.Scope {
			b.WriteString(", scope")
		}
		b.WriteString("\n")
	}
	for i, ev := range c.Steps {
		fmt.Fprintf(&b, "  %d. %s\n", i+1, c.describe(ev))
	}
	return b.String()
}

func (c *Case) describe(ev evSpec) string {
	if ev.Again >= 0 {
		return fmt.Sprintf("redelivery of step %d", ev.Again+1)
	}
	if ev.Reprovision {
		return fmt.Sprintf("%s provisions again", c.devID(ev.Device))
	}
	if ev.Intent.GroupWide() {
		return fmt.Sprintf("%s %s (t+%dm)", ev.Intent, c.groupID(ev.Group), ev.At)
	}
	s := fmt.Sprintf("%s %s (t+%dm)", ev.Intent, c.devID(ev.Device), ev.At)
	if ev.Group >= 0 {
		s += " group hint " + c.groupID(ev.Group)
	}
	if ev.Cert != "" {
		s += " cert " + ev.Cert
	}
	if ev.Action != "" {
		s += " action " + string(ev.Action)
	}
	if ev.Intent == d.IntentMoved {
		s += " to " + hubs[ev.Target]
	}
	return s
}

// shrinks returns smaller variants of c, smallest steps first: one step fewer, one device
// fewer (with the steps that name it), one group fewer (with its members and steps).
func (c *Case) shrinks() []*Case {
	var out []*Case
	for i := range c.Steps {
		out = append(out, c.withoutStep(i))
	}
	for i := range c.Devices {
		out = append(out, c.withoutDevice(i))
	}
	for g := range c.Groups {
		if v := c.withoutGroup(g); v != nil {
			out = append(out, v)
		}
	}
	return out
}

func (c *Case) clone() *Case {
	n := *c
	n.CAs = append([]caSpec(nil), c.CAs...)
	n.Groups = append([]groupSpec(nil), c.Groups...)
	n.Devices = append([]devSpec(nil), c.Devices...)
	n.Steps = append([]evSpec(nil), c.Steps...)
	return &n
}

func (c *Case) withoutStep(i int) *Case {
	return c.clone().keepSteps(c, map[int]bool{i: true}, func(*evSpec) {})
}

func (c *Case) withoutDevice(i int) *Case {
	n := c.clone()
	n.Devices = append(append([]devSpec(nil), c.Devices[:i]...), c.Devices[i+1:]...)
	drop := map[int]bool{}
	for j, ev := range c.Steps {
		if !ev.Intent.GroupWide() && ev.Again < 0 && ev.Device == i {
			drop[j] = true
		}
	}
	return n.keepSteps(c, drop, func(ev *evSpec) {
		if ev.Device > i {
			ev.Device--
		}
	})
}

func (c *Case) withoutGroup(g int) *Case {
	for _, dv := range c.Devices {
		if dv.Kind == kSKMember && dv.Group == g {
			return nil // drop the members first
		}
	}
	n := c.clone()
	n.Groups = append(append([]groupSpec(nil), c.Groups[:g]...), c.Groups[g+1:]...)
	for _, dv := range n.Devices {
		if dv.Kind == kX509Member && n.nearestGroup(dv.CA) < 0 {
			return nil // a member would lose its group
		}
	}
	for i := range n.Devices {
		if n.Devices[i].Group > g {
			n.Devices[i].Group--
		}
	}
	drop := map[int]bool{}
	for j, ev := range c.Steps {
		if ev.Intent.GroupWide() && ev.Again < 0 && ev.Group == g {
			drop[j] = true
		}
	}
	return n.keepSteps(c, drop, func(ev *evSpec) {
		switch {
		case ev.Group == g:
			ev.Group = -1
		case ev.Group > g:
			ev.Group--
		}
	})
}

// keepSteps rebuilds n's steps from c's without the dropped ones (and their redeliveries),
// adjusting each kept step with fix.
func (n *Case) keepSteps(c *Case, drop map[int]bool, fix func(*evSpec)) *Case {
	idx := map[int]int{}
	n.Steps = nil
	for j, ev := range c.Steps {
		if drop[j] || ev.Again >= 0 && drop[ev.Again] {
			continue
		}
		if ev.Again >= 0 {
			ev = n.Steps[idx[ev.Again]] // a redelivery carries its original's event
			ev.Again = idx[c.Steps[j].Again]
		} else {
			fix(&ev)
		}
		idx[j] = len(n.Steps)
		n.Steps = append(n.Steps, ev)
	}
	return n
}
