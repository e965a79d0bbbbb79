package monitoring

import (
	"bufio"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var (
	root       = filepath.Join("..", "..")
	dashboards = []string{
		filepath.Join(root, "packaging", "grafana", "roce-agent-host.json"),
		filepath.Join(root, "packaging", "grafana", "roce-agent-tenant.json"),
	}
	promDir   = filepath.Join(root, "packaging", "prometheus")
	rulesFile = "roce-agent.rules.yml"
	rulesTest = "roce-agent.rules_test.yml"
)

// metricSet is the exported metrics: name -> label names.
type metricSet map[string]map[string]bool

func (m metricSet) add(name string, labels ...string) {
	if m[name] == nil {
		m[name] = map[string]bool{}
	}
	for _, l := range labels {
		m[name][l] = true
	}
}

// Labels every series has once scraped, or that PromQL adds.
var targetLabels = []string{"job", "instance"}

// exportedMetrics reads the metric definitions out of the agent's and the
// controller's source: desc("name", help, labels...) (the agent's helper),
// prometheus.NewDesc(namespace+"_name" or BuildFQName(...), help,
// []string{labels}, ...), and the Opts literals of New{Counter,Gauge,
// Histogram}[Vec] (with Name a literal, or the parameter of a helper
// closure such as controller_report.go's opts). TestExportedMatchesGolden
// keeps this honest against a real scrape.
func exportedMetrics(t *testing.T) metricSet {
	t.Helper()
	set := metricSet{}
	for _, dir := range []string{"agent", "controller"} {
		parsePackageMetrics(t, filepath.Join(root, dir), set)
	}
	if len(set) < 20 {
		t.Fatalf("found only %d metrics in the agent and controller source: the extractor no longer understands it", len(set))
	}
	return set
}

func parsePackageMetrics(t *testing.T, dir string, set metricSet) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	ns := ""
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		for _, d := range f.Decls {
			if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.CONST {
				for _, s := range g.Specs {
					vs := s.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if n.Name == "namespace" && i < len(vs.Values) {
							ns = strLit(vs.Values[i])
						}
					}
				}
			}
		}
	}
	if ns == "" {
		t.Fatalf("%s: no `const namespace = \"...\"`", dir)
	}
	// helpers: closures building Opts whose Name is a parameter.
	type helper struct {
		sub string
		arg int
	}
	helpers := map[string]helper{}
	fq := func(sub, name string) string {
		parts := []string{ns}
		if sub != "" {
			parts = append(parts, sub)
		}
		return strings.Join(append(parts, name), "_")
	}
	addOpts := func(name string, stack []ast.Node, constLabels ...string) {
		labels := append(vecLabels(stack), constLabels...)
		set.add(name, labels...)
		if isHistogram(stack) {
			set.add(name+"_bucket", append(labels, "le")...)
			set.add(name+"_sum", labels...)
			set.add(name+"_count", labels...)
		}
	}
	for pass := 0; pass < 2; pass++ {
		for _, f := range files {
			var stack []ast.Node
			ast.Inspect(f, func(n ast.Node) bool {
				if n == nil {
					stack = stack[:len(stack)-1]
					return true
				}
				stack = append(stack, n)
				switch n := n.(type) {
				case *ast.CompositeLit:
					if !isPromOpts(n.Type) {
						return true
					}
					fields := map[string]ast.Expr{}
					for _, e := range n.Elts {
						if kv, ok := e.(*ast.KeyValueExpr); ok {
							if k, ok := kv.Key.(*ast.Ident); ok {
								fields[k.Name] = kv.Value
							}
						}
					}
					if id, ok := fields["Namespace"].(*ast.Ident); !ok || id.Name != "namespace" {
						return true
					}
					sub := strLit(fields["Subsystem"])
					var constLabels []string
					if c, ok := fields["ConstLabels"].(*ast.CompositeLit); ok {
						for _, e := range c.Elts {
							if kv, ok := e.(*ast.KeyValueExpr); ok && strLit(kv.Key) != "" {
								constLabels = append(constLabels, strLit(kv.Key))
							}
						}
					}
					switch name := fields["Name"].(type) {
					case *ast.BasicLit:
						if pass == 1 {
							addOpts(fq(sub, strLit(name)), stack, constLabels...)
						}
					case *ast.Ident:
						if pass == 0 {
							if h, idx := enclosingHelper(stack, name.Name); h != "" {
								helpers[h] = helper{sub, idx}
							}
						}
					}
				case *ast.CallExpr:
					if pass == 0 {
						return true
					}
					if id, ok := n.Fun.(*ast.Ident); ok {
						if id.Name == "desc" && len(n.Args) >= 2 && strLit(n.Args[0]) != "" {
							var labels []string
							for _, a := range n.Args[2:] {
								labels = append(labels, strLit(a))
							}
							set.add(fq("", strLit(n.Args[0])), labels...)
						}
						if h, ok := helpers[id.Name]; ok && h.arg < len(n.Args) && strLit(n.Args[h.arg]) != "" {
							addOpts(fq(h.sub, strLit(n.Args[h.arg])), stack)
						}
					}
					if isSel(n.Fun, "prometheus", "NewDesc") && len(n.Args) >= 3 {
						name := ""
						switch a := n.Args[0].(type) {
						case *ast.BinaryExpr: // namespace+"_name"
							if id, ok := a.X.(*ast.Ident); ok && id.Name == "namespace" && a.Op == token.ADD {
								name = ns + strLit(a.Y)
							}
						case *ast.CallExpr: // prometheus.BuildFQName(namespace, "sub", "name")
							if isSel(a.Fun, "prometheus", "BuildFQName") && len(a.Args) == 3 {
								if id, ok := a.Args[0].(*ast.Ident); ok && id.Name == "namespace" && strLit(a.Args[2]) != "" {
									name = fq(strLit(a.Args[1]), strLit(a.Args[2]))
								}
							}
						}
						if name != "" {
							set.add(name, strList(n.Args[2])...)
						}
					}
				}
				return true
			})
		}
	}
}

func strLit(e ast.Expr) string {
	b, ok := e.(*ast.BasicLit)
	if !ok || b.Kind != token.STRING {
		return ""
	}
	s, err := strconv.Unquote(b.Value)
	if err != nil {
		return ""
	}
	return s
}

func strList(e ast.Expr) []string {
	c, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	var out []string
	for _, el := range c.Elts {
		if s := strLit(el); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func isSel(e ast.Expr, pkg, name string) bool {
	s, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	id, ok := s.X.(*ast.Ident)
	return ok && id.Name == pkg && s.Sel.Name == name
}

func isPromOpts(e ast.Expr) bool {
	for _, n := range []string{"Opts", "CounterOpts", "GaugeOpts", "HistogramOpts", "SummaryOpts"} {
		if isSel(e, "prometheus", n) {
			return true
		}
	}
	return false
}

// vecLabels are the label names of the New*Vec call around an Opts.
func vecLabels(stack []ast.Node) []string {
	for i := len(stack) - 1; i >= 0; i-- {
		c, ok := stack[i].(*ast.CallExpr)
		if !ok {
			continue
		}
		if s, ok := c.Fun.(*ast.SelectorExpr); ok && strings.HasPrefix(s.Sel.Name, "New") && strings.HasSuffix(s.Sel.Name, "Vec") && len(c.Args) >= 2 {
			return strList(c.Args[1])
		}
	}
	return nil
}

func isHistogram(stack []ast.Node) bool {
	for i := len(stack) - 1; i >= 0; i-- {
		switch n := stack[i].(type) {
		case *ast.CompositeLit:
			if isSel(n.Type, "prometheus", "HistogramOpts") {
				return true
			}
		case *ast.CallExpr:
			if s, ok := n.Fun.(*ast.SelectorExpr); ok && strings.HasPrefix(s.Sel.Name, "NewHistogram") {
				return true
			}
		}
	}
	return false
}

// enclosingHelper finds `h := func(..., param, ...) ...` around an Opts
// whose Name is param: the helper's name and the parameter's index.
func enclosingHelper(stack []ast.Node, param string) (string, int) {
	for i := len(stack) - 1; i > 0; i-- {
		fl, ok := stack[i].(*ast.FuncLit)
		if !ok {
			continue
		}
		idx := -1
		k := 0
		for _, f := range fl.Type.Params.List {
			for _, n := range f.Names {
				if n.Name == param {
					idx = k
				}
				k++
			}
		}
		as, ok := stack[i-1].(*ast.AssignStmt)
		if idx < 0 || !ok || len(as.Lhs) != 1 {
			return "", -1
		}
		if id, ok := as.Lhs[0].(*ast.Ident); ok {
			return id.Name, idx
		}
		return "", -1
	}
	return "", -1
}

// TestExportedMatchesGolden: every series of the golden scrape
// (testdata/golden/metrics) is a metric the source extractor found, with
// its labels: the extractor sees what the agent really exports.
func TestExportedMatchesGolden(t *testing.T) {
	set := exportedMetrics(t)
	goldens, err := filepath.Glob(filepath.Join(root, "testdata", "golden", "metrics", "*.prom"))
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden metrics files: %v", err)
	}
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? `)
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	seen := 0
	for _, g := range goldens {
		f, err := os.Open(g)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			m := sample.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			seen++
			labels, ok := set[m[1]]
			if !ok {
				t.Errorf("%s: %s is not found in the agent source by the extractor (update exportedMetrics)", filepath.Base(g), m[1])
				continue
			}
			for _, l := range label.FindAllStringSubmatch(m[2], -1) {
				if !labels[l[1]] {
					t.Errorf("%s: %s has label %s, the extractor found %v", filepath.Base(g), m[1], l[1], keys(labels))
				}
			}
		}
		f.Close()
	}
	if seen == 0 {
		t.Fatal("no samples in the golden files")
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// PromQL scanning: enough to find metric names, selector matchers and
// grouping labels without a PromQL parser (promtool checks the syntax).
var (
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	reSelector = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	reMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	reOurs     = regexp.MustCompile(`\broce_(?:agent|controller)_[a-zA-Z0-9_:]*`)
	reGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	reLegend   = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	reLabelVal = regexp.MustCompile(`^label_values\(\s*(?:([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)
	reVar      = regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// checkExpr reports metrics and labels an expression uses that are not
// exported; it returns the labels its metrics carry (for legends).
func checkExpr(set metricSet, where, expr string) (labels map[string]bool, errs []string) {
	labels = map[string]bool{"__name__": true}
	for _, l := range targetLabels {
		labels[l] = true
	}
	stripped := reString.ReplaceAllString(expr, `""`)
	names := reOurs.FindAllString(stripped, -1)
	for _, n := range names {
		ls, ok := set[n]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: metric %s is not exported by the agent or the controller", where, n))
			continue
		}
		for l := range ls {
			labels[l] = true
		}
	}
	for _, sel := range reSelector.FindAllStringSubmatch(expr, -1) {
		ls, ok := set[sel[1]]
		if !ok {
			continue // not ours (up, ALERTS) or reported above
		}
		for _, m := range reMatcher.FindAllStringSubmatch(sel[2], -1) {
			if !ls[m[1]] && !slices.Contains(targetLabels, m[1]) {
				errs = append(errs, fmt.Sprintf("%s: %s has no label %q (labels: %v)", where, sel[1], m[1], keys(ls)))
			}
		}
	}
	if len(names) > 0 {
		for _, g := range reGrouping.FindAllStringSubmatch(stripped, -1) {
			for _, l := range strings.Split(g[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !labels[l] {
					errs = append(errs, fmt.Sprintf("%s: grouping label %q is on none of %v", where, l, names))
				}
			}
		}
	}
	return labels, errs
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasource              `json:"datasource"`
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []target                 `json:"targets"`
	Panels     []panel                  `json:"panels"`
}

type target struct {
	RefID        string      `json:"refId"`
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat"`
	Datasource   *datasource `json:"datasource"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasource     `json:"datasource"`
}

// query is a variable's query: a string, or Grafana 10's object.
func (v variable) query() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &o)
	return o.Query
}

// Grafana's own variables, usable in any query.
var builtinVars = map[string]bool{"__rate_interval": true, "__interval": true, "__interval_ms": true, "__range": true,
	"__range_s": true, "__range_ms": true, "__from": true, "__to": true, "__dashboard": true}

func loadDashboard(t *testing.T, path string) dashboard {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

// TestDashboards checks each dashboard's model (schema version, a
// Prometheus datasource variable every panel and query uses, unique panel
// ids, layout, targets with expressions) and that its queries use only
// exported metrics and labels and defined variables.
func TestDashboards(t *testing.T) {
	set := exportedMetrics(t)
	uids := map[string]string{}
	for _, path := range dashboards {
		t.Run(filepath.Base(path), func(t *testing.T) {
			d := loadDashboard(t, path)
			if d.UID == "" || d.Title == "" {
				t.Errorf("uid %q, title %q: both are needed", d.UID, d.Title)
			}
			if other, ok := uids[d.UID]; ok {
				t.Errorf("uid %q is also %s's", d.UID, other)
			}
			uids[d.UID] = path
			if d.SchemaVersion < 36 {
				t.Errorf("schemaVersion %d, want 36 or later (Grafana 9+)", d.SchemaVersion)
			}
			vars := map[string]bool{}
			dsVar := ""
			for _, v := range d.Templating.List {
				vars[v.Name] = true
				if v.Type == "datasource" && v.query() == "prometheus" {
					dsVar = v.Name
				}
			}
			if dsVar == "" {
				t.Fatal("no datasource variable of type prometheus")
			}
			dsOK := func(ds *datasource) bool {
				return ds != nil && ds.Type == "prometheus" && (ds.UID == "${"+dsVar+"}" || ds.UID == "$"+dsVar)
			}
			var errs []string
			checkVars := func(where, q string) {
				for _, m := range reVar.FindAllStringSubmatch(q, -1) {
					if !vars[m[1]] && !builtinVars[m[1]] {
						errs = append(errs, fmt.Sprintf("%s: variable $%s is not defined", where, m[1]))
					}
				}
			}
			for _, v := range d.Templating.List {
				if v.Type != "query" {
					continue
				}
				where := "variable " + v.Name
				if !dsOK(v.Datasource) {
					errs = append(errs, where+": datasource is not the datasource variable")
				}
				q := v.query()
				m := reLabelVal.FindStringSubmatch(q)
				if m == nil {
					errs = append(errs, fmt.Sprintf("%s: query %q is not label_values(metric{...}, label)", where, q))
					continue
				}
				checkVars(where, q)
				if m[1] != "" && reOurs.MatchString(m[1]) {
					ls, e := checkExpr(set, where, m[1]+m[2])
					errs = append(errs, e...)
					if !ls[m[3]] {
						errs = append(errs, fmt.Sprintf("%s: %s has no label %q", where, m[1], m[3]))
					}
				}
			}
			ids := map[int]string{}
			var walk func(ps []panel)
			walk = func(ps []panel) {
				for _, p := range ps {
					where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
					if p.ID <= 0 {
						errs = append(errs, where+": no id")
					} else if other, ok := ids[p.ID]; ok {
						errs = append(errs, fmt.Sprintf("%s: id also used by %q", where, other))
					}
					ids[p.ID] = p.Title
					if g := p.GridPos; g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
						errs = append(errs, fmt.Sprintf("%s: gridPos %+v outside the 24 columns", where, g))
					}
					if p.Type == "row" {
						walk(p.Panels)
						continue
					}
					if !dsOK(p.Datasource) {
						errs = append(errs, where+": datasource is not the datasource variable")
					}
					if len(p.Targets) == 0 {
						errs = append(errs, where+": no targets")
					}
					refs := map[string]bool{}
					for _, tg := range p.Targets {
						tw := where + " target " + tg.RefID
						if tg.RefID == "" || refs[tg.RefID] {
							errs = append(errs, tw+": missing or repeated refId")
						}
						refs[tg.RefID] = true
						if strings.TrimSpace(tg.Expr) == "" {
							errs = append(errs, tw+": no expr")
							continue
						}
						if tg.Datasource != nil && !dsOK(tg.Datasource) {
							errs = append(errs, tw+": datasource is not the datasource variable")
						}
						checkVars(tw, tg.Expr)
						labels, e := checkExpr(set, tw, tg.Expr)
						errs = append(errs, e...)
						for _, l := range reLegend.FindAllStringSubmatch(tg.LegendFormat, -1) {
							if !labels[l[1]] {
								errs = append(errs, fmt.Sprintf("%s: legend {{%s}} is a label of none of its metrics", tw, l[1]))
							}
						}
					}
				}
			}
			walk(d.Panels)
			if len(ids) < 5 {
				errs = append(errs, fmt.Sprintf("only %d panels", len(ids)))
			}
			for _, e := range errs {
				t.Error(e)
			}
		})
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			EvalTime  string `yaml:"eval_time"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func loadYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestRules checks the alerting rules: exported metrics and labels only,
// a severity, summary and description on each alert, and a unit test that
// fires it and one that does not.
func TestRules(t *testing.T) {
	set := exportedMetrics(t)
	var rf ruleFile
	loadYAML(t, filepath.Join(promDir, rulesFile), &rf)
	var rt ruleTests
	loadYAML(t, filepath.Join(promDir, rulesTest), &rt)
	if !slices.Contains(rt.RuleFiles, rulesFile) {
		t.Errorf("%s does not load %s (rule_files: %v)", rulesTest, rulesFile, rt.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			_, errs := checkExpr(set, name, r.Expr)
			for _, e := range errs {
				t.Error(e)
			}
			if r.Alert == "" {
				continue
			}
			if alerts[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = true
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("%s: severity %q, want critical, warning or info", name, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description"} {
				if !strings.Contains(r.Annotations[a], "{{ $labels.") {
					t.Errorf("%s: annotation %s does not name the series ({{ $labels.* }}): %q", name, a, r.Annotations[a])
				}
			}
			for _, n := range reOurs.FindAllString(r.Annotations["description"], -1) {
				if _, ok := set[n]; !ok {
					t.Errorf("%s: description names %s, which is not exported", name, n)
				}
			}
			if r.For == "" {
				t.Errorf("%s: no `for:`; every alert here should outlast a scrape or two", name)
			}
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: %s needs a case that fires it (%v) and one where it stays quiet (%v)", name, rulesTest, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	for a := range fires {
		if !alerts[a] {
			t.Errorf("%s tests alert %s, which %s does not define", rulesTest, a, rulesFile)
		}
	}
	for _, want := range []string{"RoCERailDown", "RoCEBandwidthLow", "RoCEPFCStorm", "RoCEDriftRepairsRising", "RoCEControllerDisconnected", "RoCEConfigReloadFailed"} {
		if !alerts[want] {
			t.Errorf("alert %s is missing", want)
		}
	}
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus); .ci/run installs it")
	}
	return p
}

// TestPromtool runs `promtool check rules` and `promtool test rules`
// (packaging/prometheus/check.sh does the same by hand).
func TestPromtool(t *testing.T) {
	p := promtool(t)
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTest}} {
		cmd := exec.Command(p, args...)
		cmd.Dir = promDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDashboardQueriesParse has promtool parse every dashboard query, as
// recording rules, with Grafana's variables replaced by sample values.
func TestDashboardQueriesParse(t *testing.T) {
	p := promtool(t)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	var where []string
	sample := func(m string) string {
		name := reVar.FindStringSubmatch(m)[1]
		if strings.HasPrefix(name, "__r") || strings.HasPrefix(name, "__interval") {
			return "5m"
		}
		return "x"
	}
	for _, path := range dashboards {
		d := loadDashboard(t, path)
		var walk func(ps []panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				walk(p.Panels)
				for _, tg := range p.Targets {
					if tg.Expr == "" {
						continue
					}
					rules = append(rules, rule{Record: fmt.Sprintf("dashboard_query_%d", len(rules)), Expr: reVar.ReplaceAllStringFunc(tg.Expr, sample)})
					where = append(where, fmt.Sprintf("%s panel %d %q target %s", filepath.Base(path), p.ID, p.Title, tg.RefID))
				}
			}
		}
		walk(d.Panels)
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboards.rules.yml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(p, "check", "rules", file).CombinedOutput(); err != nil {
		msg := string(out)
		for i := len(where) - 1; i >= 0; i-- { // longest index first
			msg = strings.ReplaceAll(msg, fmt.Sprintf("dashboard_query_%d", i), where[i])
		}
		t.Errorf("promtool check rules on the dashboard queries: %v\n%s", err, msg)
	}
}
