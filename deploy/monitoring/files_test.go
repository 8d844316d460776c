package monitoring_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The files under test, relative to this package's directory.
const (
	rulesFile     = "../prometheus/millrace-rules.yaml"
	dashboardFile = "../grafana/millrace.json"
	chartRules    = "../helm/millrace/files/millrace-rules.yaml"
	chartDash     = "../helm/millrace/files/millrace-dashboard.json"
	monitoringDoc = "../../docs/monitoring.md"
)

// ruleFile is a Prometheus rules file; KnownFields rejects a misspelt key
// promtool might accept as an unknown annotation-like field.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// alerts are the rules file's alerts, in file order.
func alerts(t *testing.T) []rule {
	t.Helper()
	var out []rule
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	UID           string
	Title         string
	Templating    struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		Datasource *datasource `json:"datasource"`
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
	} `json:"targets"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	return d
}

// query is one PromQL expression of the dashboard or the rules, named for
// failure messages.
type query struct{ name, expr string }

func dashboardQueries(t *testing.T) []query {
	t.Helper()
	var out []query
	for _, p := range readDashboard(t).Panels {
		for _, tg := range p.Targets {
			out = append(out, query{fmt.Sprintf("dashboard panel %d %q target %s", p.ID, p.Title, tg.RefID), tg.Expr})
		}
	}
	return out
}

func alertQueries(t *testing.T) []query {
	t.Helper()
	var out []query
	for _, a := range alerts(t) {
		out = append(out, query{"alert " + a.Alert, a.Expr})
	}
	return out
}

// The chart embeds copies (Helm's .Files.Get reads only inside the chart):
// they must not drift from the files in deploy/.
func TestChartCopiesAreIdentical(t *testing.T) {
	t.Parallel()
	for src, cp := range map[string]string{rulesFile: chartRules, dashboardFile: chartDash} {
		a, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(cp)
		if err != nil {
			t.Fatalf("%v: the chart needs a copy of %s", err, src)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s: copy it (in the repository root: cp deploy/%s deploy/%s)", cp, src, strings.TrimPrefix(src, "../"), strings.TrimPrefix(cp, "../"))
		}
	}
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: run .ci/run's install step (apt-get install -y --no-install-recommends prometheus)")
	}
	return p
}

func TestRulesPassPromtool(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	for _, f := range []string{rulesFile, chartRules} {
		out, err := exec.Command(bin, "check", "rules", f).CombinedOutput()
		if err != nil {
			t.Errorf("promtool check rules %s: %v\n%s", f, err, out)
		}
	}
}

// promtool has no command to check a lone expression, so the dashboard's
// expressions go through it as recording rules: a syntax error or an
// unknown function fails here, without a running Prometheus.
func TestDashboardExpressionsParse(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	qs := dashboardQueries(t)
	for i, q := range qs {
		expr, err := json.Marshal(grafanaToPromQL(q.expr)) // a JSON string is a YAML string
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "      - record: dashboard:expr_%d\n        expr: %s\n", i, expr)
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "rules", f).CombinedOutput()
	if err != nil {
		t.Fatalf("the dashboard's expressions do not parse: %v\n%s\n(expr_N is the N-th target in panel order)", err, out)
	}
	if want := fmt.Sprintf("%d rules found", len(qs)); !strings.Contains(string(out), want) {
		t.Errorf("promtool checked a different number of expressions than the dashboard has (want %q):\n%s", want, out)
	}
}

func TestDashboardShape(t *testing.T) {
	t.Parallel()
	d := readDashboard(t)
	if d.SchemaVersion != 39 {
		t.Errorf("schemaVersion = %d, want 39", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q and title %q must be set (the sidecar and links find the dashboard by uid)", d.UID, d.Title)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["namespace"] != "query" {
		t.Errorf("template variables %v, want datasource (a datasource) and namespace (a query)", vars)
	}
	ids := map[int]bool{}
	var rows []string
	exprs := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			rows = append(rows, p.Title)
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %d %q: datasource %+v, want prometheus ${datasource}", p.ID, p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %d %q has no targets", p.ID, p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" {
				t.Errorf("panel %d %q: a target without expr or refId", p.ID, p.Title)
			}
			// One installation at a time: every selector takes the
			// namespace variable.
			if sel, ns := metricSelector.FindAllString(tg.Expr, -1), strings.Count(tg.Expr, `namespace=~"$namespace"`); len(sel) != ns {
				t.Errorf("panel %d %q target %s: %d metric selectors, %d filtered by namespace=~\"$namespace\": %s", p.ID, p.Title, tg.RefID, len(sel), ns, tg.Expr)
			}
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %d %q target %s: datasource %+v, want ${datasource}", p.ID, p.Title, tg.RefID, tg.Datasource)
			}
			exprs++
		}
	}
	if want := []string{"Flows", "NATS", "Outbox & commands", "Queries", "HTTP"}; strings.Join(rows, "|") != strings.Join(want, "|") {
		t.Errorf("rows %q, want %q", rows, want)
	}
	if exprs == 0 {
		t.Error("the dashboard has no expressions")
	}
}

// Each alert the issue asks for exists, waits before firing, and carries
// what an on-call needs: a summary, a description and a runbook section
// that exists in docs/monitoring.md.
func TestAlertsAreDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(monitoringDoc)
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ +(.+)$`).FindAllStringSubmatch(string(doc), -1) {
		headings[githubAnchor(m[1])] = true
	}
	seen := map[string]bool{}
	for _, a := range alerts(t) {
		seen[a.Alert] = true
		if a.For == "" {
			t.Errorf("%s has no for: a single bad sample would page", a.Alert)
		}
		if s := a.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", a.Alert, s)
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if a.Annotations[k] == "" {
				t.Errorf("%s has no %s annotation", a.Alert, k)
			}
		}
		want := "https://github.com/millrace/millrace/blob/main/docs/monitoring.md#" + strings.ToLower(a.Alert)
		if a.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url %q, want %q", a.Alert, a.Annotations["runbook_url"], want)
		}
		if !headings[strings.ToLower(a.Alert)] {
			t.Errorf("docs/monitoring.md has no section %q (the runbook_url of %s)", a.Alert, a.Alert)
		}
	}
	for _, name := range []string{"MillraceConsumerLagGrowing", "MillraceOutboxStuck", "MillraceCommandsUnclaimed",
		"MillraceNoWorkers", "MillraceServerWithoutNATS", "MillraceStoreUnreadable", "MillraceExpiredLeases", "MillraceClockSkew"} {
		if !seen[name] {
			t.Errorf("alert %s is missing from %s", name, rulesFile)
		}
	}
}

// metricSelector is a Millrace metric name in an expression.
var metricSelector = regexp.MustCompile(`\bmillrace_[a-z_]+`)

var notInAnchor = regexp.MustCompile(`[^a-z0-9 _-]`)

// githubAnchor is the fragment GitHub gives a Markdown heading.
func githubAnchor(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = notInAnchor.ReplaceAllString(h, "")
	return strings.ReplaceAll(h, " ", "-")
}

// grafanaToPromQL replaces Grafana's interval macros with a fixed range and
// template variables with a match-all regex, so Prometheus can run the
// expression.
func grafanaToPromQL(expr string) string {
	expr = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`).ReplaceAllString(expr, "1m")
	return regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`).ReplaceAllString(expr, ".*")
}

// comparison is a comparison with a number: `> 100`, `== 0`, `>= bool 1`.
var comparison = regexp.MustCompile(`(==|!=|>=|<=|>|<)\s*(bool\s+)?[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\b`)

// neutralize makes every comparison with a number true for any sample, so
// an alert expression returns its series whether or not it would fire:
// what remains proves the metrics, labels and joins exist.
func neutralize(expr string) string {
	return comparison.ReplaceAllString(grafanaToPromQL(expr), "> -Inf")
}

func TestNeutralize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"max(x) > 120":                           "max(x) > -Inf",
		"a == 0 and on (k) b > 0":                "a > -Inf and on (k) b > -Inf",
		"abs(s) > 1.5":                           "abs(s) > -Inf",
		"x >= bool 1e3":                          "x > -Inf",
		`histogram_quantile(0.95, sum(y))`:       `histogram_quantile(0.95, sum(y))`,
		`rate(c{code=~"5.."}[$__rate_interval])`: `rate(c{code=~"5.."}[1m])`,
		`x{job=~"$job"} < -2`:                    `x{job=~".*"} > -Inf`,
	} {
		if got := neutralize(in); got != want {
			t.Errorf("neutralize(%q) = %q, want %q", in, got, want)
		}
	}
}
