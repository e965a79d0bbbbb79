package v1_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"go.yaml.in/yaml/v3"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

const goldenDir = "../../testdata/golden/inventory"

func loadDoc(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(v1.OpenAPI())
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// check validates a JSON document against a component schema.
func check(t *testing.T, doc *openapi3.T, schema string, js []byte) error {
	t.Helper()
	ref, ok := doc.Components.Schemas[schema]
	if !ok {
		t.Fatalf("no schema %s", schema)
	}
	var v any
	if err := json.Unmarshal(js, &v); err != nil {
		t.Fatal(err)
	}
	return ref.Value.VisitJSON(v, openapi3.MultiErrors())
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpenAPIDocument(t *testing.T) {
	doc := loadDoc(t)
	for _, p := range []struct{ path, method string }{
		{"/v1/status", "GET"},
		{"/v1/nodes/{node}/config", "GET"},
		{"/v1/nodes/{node}/status", "PUT"},
	} {
		item := doc.Paths.Find(p.path)
		if item == nil || item.GetOperation(p.method) == nil {
			t.Errorf("no %s %s", p.method, p.path)
		}
	}
	cfg := doc.Paths.Find("/v1/nodes/{node}/config").Get
	for _, code := range []int{200, 304, 404} {
		if cfg.Responses.Status(code) == nil {
			t.Errorf("GET config has no %d response", code)
		}
	}
	if cfg.Responses.Status(200).Value.Headers["ETag"] == nil {
		t.Error("GET config 200 has no ETag header")
	}
	var params []string
	for _, p := range cfg.Parameters {
		params = append(params, p.Value.In+":"+p.Value.Name)
	}
	for _, want := range []string{"path:node", "header:If-None-Match", "query:wait"} {
		if !slices.Contains(params, want) {
			t.Errorf("GET config lacks parameter %s (has %v)", want, params)
		}
	}
	if a, b := v1.OpenAPI(), v1.OpenAPI(); !bytes.Equal(a, b) || &a[0] == &b[0] {
		t.Error("OpenAPI must return a fresh copy")
	}
}

// The golden inventories (the CLI's and the daemon's JSON) validate, and
// decode into v1.Inventory and encode back byte for byte.
func TestOpenAPIInventoryGolden(t *testing.T) {
	doc := loadDoc(t)
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	if err != nil || len(files) < 4 {
		t.Fatalf("golden files: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := check(t, doc, "Inventory", raw); err != nil {
				t.Errorf("does not validate: %v", err)
			}
			var inv v1.Inventory
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&inv); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			enc := json.NewEncoder(&out)
			enc.SetIndent("", "  ")
			if err := enc.Encode(&inv); err != nil {
				t.Fatal(err)
			}
			if out.String() != string(raw) {
				t.Errorf("decode and encode changed the document:\n%s", out.String())
			}
		})
	}
}

func goldenInventory(t *testing.T, name string) *v1.Inventory {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(goldenDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var inv v1.Inventory
	if err := json.Unmarshal(raw, &inv); err != nil {
		t.Fatal(err)
	}
	return &inv
}

func sampleStatus(t *testing.T) *v1.NodeStatus {
	since := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.FixedZone("CET", 3600))
	yes := true
	return &v1.NodeStatus{
		Node:              "gpu-017",
		Version:           "v0.3.0",
		AppliedGeneration: 42,
		Inventory:         goldenInventory(t, "dgx-h100-nvml.json"),
		Rails: []v1.RailStatus{
			{Rail: 0, Netdev: "enp27s0np0", RDMADevice: "mlx5_0", Tenant: &v1.TenantConfig{ID: "tenant-a", VRF: "TENANT-A", VNI: 10001},
				IPv4: "10.0.0.1/31", IPv6: "fc00:0:0:1::1/127", GIDIndexIPv4: 3, GIDIndexIPv6: 1,
				Conditions: []v1.Condition{
					{Type: v1.ConditionLinkUp, Status: v1.StatusTrue, Reason: "OperUp", Since: since},
					{Type: v1.ConditionAddressesReady, Status: v1.StatusFalse, Reason: "Conflict", Message: "10.0.0.1/31 is on eth9", Since: since},
					{Type: v1.ConditionQoSReady, Status: v1.StatusUnsupported, Reason: "Unsupported", Message: "dcb: no dcbnl", Since: since},
					{Type: v1.ConditionGPUAffinityOK, Status: v1.StatusUnknown, Reason: "NoGPU"},
				}},
			{Rail: 1, Netdev: "rail1", GIDIndexIPv4: -1, GIDIndexIPv6: -1,
				LLDP:       &v1.LLDPNeighbor{ChassisID: "0c:42:a1:00:00:01", SysName: "leaf1", PortID: "swp3", PortDescr: "to gpu-017 rail 1", Source: v1.LLDPSourceLldpctl, Seen: since},
				Conditions: []v1.Condition{{Type: v1.ConditionCablingOK, Status: v1.StatusTrue, Reason: "Planned", Since: since}}},
		},
		Conditions: []v1.Condition{{Type: v1.ConditionNVMLReady, Status: v1.StatusTrue, Reason: "Available", Message: "driver 550.54.15", Since: since}},
		Probes: []v1.ProbeResult{
			{Rail: 0, PeerNode: "gpu-018", PeerRail: 0, Tool: v1.ProbeToolBandwidth, Family: v1.ProbeFamilyIPv4, Time: since,
				Bandwidth: &v1.BandwidthProbe{AvgGbps: 391.2, PeakGbps: 395.5, MessageBytes: 65536, Iterations: 5000}},
			{Rail: 0, PeerNode: "gpu-018", PeerRail: 0, Tool: v1.ProbeToolLatency, Family: v1.ProbeFamilyIPv6, Time: since,
				Latency: &v1.LatencyProbe{MinUs: 1.9, TypicalUs: 2.1, P99Us: 2.8, P999Us: 4.4, MessageBytes: 2, Iterations: 1000}},
			{Rail: 1, PeerNode: "gpu-019", PeerRail: 1, Tool: v1.ProbeToolReachability, Family: v1.ProbeFamilyIPv4, Time: since, Reachable: &yes},
			{Rail: 1, PeerNode: "gpu-020", PeerRail: 1, Tool: v1.ProbeToolReachability, Time: since, Error: "rping: timeout after 5s"},
		},
		LastReconcile: since,
		LastError:     "link: rail 1: boom",
	}
}

func TestOpenAPINodeStatus(t *testing.T) {
	doc := loadDoc(t)
	st := sampleStatus(t)
	if err := check(t, doc, "NodeStatus", mustJSON(t, st)); err != nil {
		t.Errorf("status does not validate: %v", err)
	}
	// What the agent serves before it has rails or an inventory.
	if err := check(t, doc, "NodeStatus", mustJSON(t, &v1.NodeStatus{})); err != nil {
		t.Errorf("empty status does not validate: %v", err)
	}
	for _, c := range v1.ConditionTypes {
		js := mustJSON(t, v1.Condition{Type: c, Status: v1.StatusTrue, Reason: "R"})
		if err := check(t, doc, "Condition", js); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}
}

// A tenant's health with its rail-pair matrix validates, and so does one
// with nothing reported.
func TestOpenAPITenantHealth(t *testing.T) {
	doc := loadDoc(t)
	st := sampleStatus(t)
	beat := st.LastReconcile.Add(3 * time.Second)
	h := v1.TenantHealth{
		Tenant: "tenant-a",
		Rails: []v1.RailHealth{
			{Node: "gpu-017", Rail: 0, Alive: true, LastHeartbeat: &beat, Bound: true, AppliedGeneration: 42, ConfigGeneration: 42,
				Conditions: st.Rails[0].Conditions},
			{Node: "gpu-018", Rail: 0, Alive: false, Bound: false, ConfigGeneration: 7, Conditions: []v1.Condition{}},
		},
		Healthy: 1, Total: 2,
		Pairs: []v1.ProbePair{
			{Node: "gpu-017", Rail: 0, PeerNode: "gpu-018", PeerRail: 0, OK: true, Results: st.Probes[:2]},
			{Node: "gpu-017", Rail: 1, PeerNode: "gpu-020", PeerRail: 1, OK: false, Results: st.Probes[3:]},
		},
		PairsOK: 1, PairsTotal: 2,
	}
	if err := check(t, doc, "TenantHealth", mustJSON(t, h)); err != nil {
		t.Errorf("health does not validate: %v", err)
	}
	empty := v1.TenantHealth{Tenant: "tenant-b", Rails: []v1.RailHealth{}, Pairs: []v1.ProbePair{}}
	if err := check(t, doc, "TenantHealth", mustJSON(t, empty)); err != nil {
		t.Errorf("empty health does not validate: %v", err)
	}
	js := string(mustJSON(t, h))
	for _, bad := range []struct{ name, from, to string }{
		{"without pairs", `"pairs":[`, `"pairz":[`},
		{"pair without results", `"ok":true,"results":[`, `"ok":true,"resultz":[`},
		{"unknown family", `"family":"ipv4"`, `"family":"ib"`},
	} {
		b := strings.Replace(js, bad.from, bad.to, 1)
		if b == js {
			t.Fatalf("%s: the replacement did not apply", bad.name)
		}
		if err := check(t, doc, "TenantHealth", []byte(b)); err == nil {
			t.Errorf("%s: accepted", bad.name)
		}
	}
}

// The config example of docs/config.md (rails) and docs/qos.md (qos),
// with the node, link and addressing sections, is a valid NodeConfig: the
// same document is the config file and the controller's answer.
func TestOpenAPINodeConfigExample(t *testing.T) {
	doc := loadDoc(t)
	example := "generation: 3\n" +
		"node: {name: gpu-017, index: 17}\n" +
		"link: {mtu: 9000, ipv6_slaac: false, routes: [10.0.0.0/8], routing: {table_base: 1000, rule_priority_base: 1000}}\n" +
		"addressing: {ipv4_pools: [10.10.0.0/16, 10.11.0.0/16, 10.12.0.0/16], ipv6_pools: [\"fc00:0:0:10::/64\"]}\n" +
		yamlBlock(t, "../../docs/config.md", "rails:") + yamlBlock(t, "../../docs/qos.md", "qos:")
	var y any
	if err := yaml.Unmarshal([]byte(example), &y); err != nil {
		t.Fatalf("%v\n%s", err, example)
	}
	js := mustJSON(t, stringKeys(y))
	if err := check(t, doc, "NodeConfig", js); err != nil {
		t.Errorf("the docs' example does not validate: %v\n%s", err, js)
	}
	var cfg v1.NodeConfig
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("the docs' example is invalid: %v", err)
	}
	if w := cfg.QoSWarnings(); len(w) != 0 {
		t.Errorf("warnings: %v", w)
	}
	if len(cfg.Rails) != 3 || cfg.Rails[0].Tenant == nil || cfg.Rails[0].Tenant.VNI != 10001 || cfg.QoS.ETS == nil || cfg.QoS.DSCPToPriority[26] != 3 ||
		cfg.QoS.DCQCN.NP["cnp_dscp"] != 48 || *cfg.Node.Index != 17 || cfg.Generation != 3 {
		t.Errorf("decoded %+v", cfg)
	}
	if err := check(t, doc, "NodeConfig", mustJSON(t, cfg)); err != nil {
		t.Errorf("re-encoded config does not validate: %v", err)
	}
	// The zero config marshals to a valid document too (pfc_priorities
	// null: leave PFC alone).
	if err := check(t, doc, "NodeConfig", mustJSON(t, v1.NodeConfig{Link: v1.LinkConfig{MTU: 9000, Routing: v1.RoutingConfig{TableBase: 1000, RulePriorityBase: 1000}}})); err != nil {
		t.Errorf("minimal config does not validate: %v", err)
	}
}

// yamlBlock returns the first ```yaml block of a document that starts with
// prefix.
func yamlBlock(t *testing.T, path, prefix string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(string(raw), "```yaml\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		if strings.HasPrefix(block, prefix) {
			return block
		}
	}
	t.Fatalf("%s has no yaml block starting %q", path, prefix)
	return ""
}

// stringKeys turns YAML's map[any]any (integer keys: dscp_to_priority)
// into JSON's objects.
func stringKeys(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = stringKeys(x)
		}
		return v
	case map[any]any:
		out := map[string]any{}
		for k, x := range v {
			out[fmt.Sprint(k)] = stringKeys(x)
		}
		return out
	case []any:
		for i, x := range v {
			v[i] = stringKeys(x)
		}
		return v
	}
	return v
}

// Documents of the wrong shape are rejected.
func TestOpenAPIRejects(t *testing.T) {
	doc := loadDoc(t)
	inv, err := os.ReadFile(filepath.Join(goldenDir, "dgx-h100.json"))
	if err != nil {
		t.Fatal(err)
	}
	empty, err := os.ReadFile(filepath.Join(goldenDir, "empty.json"))
	if err != nil {
		t.Fatal(err)
	}
	status := string(mustJSON(t, sampleStatus(t)))
	for _, tc := range []struct{ name, schema, js string }{
		{"string for an int", "NodeConfig", `{"generation": 1, "node": {"name": "n"}, "link": {"mtu": "9000", "ipv6_slaac": false, "routing": {"table_base": 1000, "rule_priority_base": 1000}}, "addressing": {}, "qos": {"pfc_priorities": null}}`},
		{"fraction for an int", "NodeConfig", `{"generation": 1.5, "node": {"name": "n"}, "link": {"mtu": 9000, "ipv6_slaac": false, "routing": {"table_base": 1000, "rule_priority_base": 1000}}, "addressing": {}, "qos": {"pfc_priorities": null}}`},
		{"unknown key", "NodeConfig", `{"generation": 1, "node": {"name": "n", "colour": "red"}, "link": {"mtu": 9000, "ipv6_slaac": false, "routing": {"table_base": 1000, "rule_priority_base": 1000}}, "addressing": {}, "qos": {}}`},
		{"rail without number", "RailConfig", `{"netdev": "eth0"}`},
		{"unknown trust", "QoSConfig", `{"trust": "cos", "pfc_priorities": [3]}`},
		{"GPU index as a string", "Inventory", strings.Replace(string(inv), `"index": 0,`, `"index": "0",`, 1)},
		{"unknown level", "Inventory", strings.Replace(string(inv), `"level": "PIX"`, `"level": "FAR"`, 1)},
		{"null list", "Inventory", strings.Replace(string(empty), `"non_rail": []`, `"non_rail": null`, 1)},
		{"unknown condition status", "NodeStatus", strings.Replace(status, `"status":"True"`, `"status":"Maybe"`, 1)},
		{"generation as a string", "NodeStatus", strings.Replace(status, `"applied_generation":42`, `"applied_generation":"42"`, 1)},
		{"unknown LLDP source", "NodeStatus", strings.Replace(status, `"source":"lldpctl"`, `"source":"snmp"`, 1)},
		{"LLDP neighbour without port", "LLDPNeighbor", `{"chassis_id": "c", "source": "frame", "seen": "2025-01-01T00:00:00Z"}`},
		{"probe without tool", "ProbeResult", `{"rail": 0, "peer_node": "n", "peer_rail": 0, "time": "2025-01-01T00:00:00Z"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.js == string(inv) || tc.js == string(empty) || tc.js == status {
				t.Fatal("the replacement did not apply")
			}
			err := check(t, doc, tc.schema, []byte(tc.js))
			if err == nil {
				t.Errorf("%s accepted:\n%.400s", tc.schema, tc.js)
			}
			t.Logf("%.200v", err)
		})
	}
}

// Every schema has exactly the JSON fields of its Go type, and requires
// exactly the fields the Go type always writes (but for the listed
// exceptions); the enumerations are the package's.
func TestOpenAPIMatchesGoTypes(t *testing.T) {
	doc := loadDoc(t)
	types := map[string]any{
		"Inventory": v1.Inventory{}, "NVMLStatus": v1.NVMLStatus{}, "GPU": v1.GPU{}, "PCIeLink": v1.PCIeLink{}, "NIC": v1.NIC{},
		"Port": v1.Port{}, "GID": v1.GID{}, "Affinity": v1.Affinity{}, "Rail": v1.Rail{}, "NonRail": v1.NonRail{},
		"NodeStatus": v1.NodeStatus{}, "RailStatus": v1.RailStatus{}, "LLDPNeighbor": v1.LLDPNeighbor{}, "Condition": v1.Condition{}, "ProbeResult": v1.ProbeResult{},
		"BandwidthProbe": v1.BandwidthProbe{}, "LatencyProbe": v1.LatencyProbe{},
		"NodeConfig": v1.NodeConfig{}, "NodeIdentity": v1.NodeIdentity{}, "LinkConfig": v1.LinkConfig{}, "RoutingConfig": v1.RoutingConfig{},
		"AddressingConfig": v1.AddressingConfig{}, "RailConfig": v1.RailConfig{}, "TenantConfig": v1.TenantConfig{},
		"QoSConfig": v1.QoSConfig{}, "ETSConfig": v1.ETSConfig{}, "DCQCNConfig": v1.DCQCNConfig{},
		"PeerConfig": v1.PeerConfig{}, "Error": v1.Error{}, "Heartbeat": v1.Heartbeat{}, "NodeList": v1.NodeList{},
		"NodeSummary": v1.NodeSummary{}, "Tenant": v1.Tenant{}, "TenantMember": v1.TenantMember{}, "Move": v1.Move{},
		"MoveResult": v1.MoveResult{}, "TenantHealth": v1.TenantHealth{}, "RailHealth": v1.RailHealth{}, "ProbePair": v1.ProbePair{},
	}
	// Written always but optional on input: null and absent both leave
	// PFC alone.
	notRequired := map[string][]string{"QoSConfig": {"pfc_priorities"}}
	for name, ref := range doc.Components.Schemas {
		s := ref.Value
		if s.Type.Is("object") && s.Properties != nil {
			if _, ok := types[name]; !ok {
				t.Errorf("schema %s has no Go type in this test", name)
			}
		}
	}
	for name, v := range types {
		ref, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("no schema for %T", v)
			continue
		}
		fields := jsonFields(reflect.TypeOf(v))
		var gotProps, wantProps, gotReq, wantReq []string
		for p := range ref.Value.Properties {
			gotProps = append(gotProps, p)
		}
		for f, omit := range fields {
			wantProps = append(wantProps, f)
			if !omit && !slices.Contains(notRequired[name], f) {
				wantReq = append(wantReq, f)
			}
		}
		gotReq = append(gotReq, ref.Value.Required...)
		for _, l := range [][]string{gotProps, wantProps, gotReq, wantReq} {
			sort.Strings(l)
		}
		if !slices.Equal(gotProps, wantProps) {
			t.Errorf("%s: properties %v, Go fields %v", name, gotProps, wantProps)
		}
		if !slices.Equal(gotReq, wantReq) {
			t.Errorf("%s: required %v, Go always writes %v", name, gotReq, wantReq)
		}
		if ap := ref.Value.AdditionalProperties; ap.Has == nil || *ap.Has {
			t.Errorf("%s: want additionalProperties: false", name)
		}
	}

	enum := func(name string) []string {
		var out []string
		for _, e := range doc.Components.Schemas[name].Value.Enum {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	var levels, statuses, types2 []string
	for _, l := range v1.Levels {
		levels = append(levels, string(l))
	}
	for _, s := range v1.ConditionStatuses {
		statuses = append(statuses, string(s))
	}
	for _, c := range v1.ConditionTypes {
		types2 = append(types2, string(c))
	}
	if got := enum("Level"); !slices.Equal(got, levels) {
		t.Errorf("Level enum %v, v1.Levels %v", got, levels)
	}
	if got := enum("ConditionStatus"); !slices.Equal(got, statuses) {
		t.Errorf("ConditionStatus enum %v, v1.ConditionStatuses %v", got, statuses)
	}
	var known []string
	if list, ok := doc.Components.Schemas["ConditionType"].Value.Extensions["x-known-values"].([]any); ok {
		for _, k := range list {
			known = append(known, fmt.Sprint(k))
		}
	}
	if !slices.Equal(known, types2) {
		t.Errorf("ConditionType x-known-values %v, v1.ConditionTypes %v", known, types2)
	}
}

// jsonFields maps the JSON names of a struct's fields to whether they are
// omitempty; embedded structs without a name are inline.
func jsonFields(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = slices.Contains(strings.Split(opts, ","), "omitempty")
	}
	return out
}
