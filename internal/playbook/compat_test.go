package playbook

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the construct table of docs/compat.md")

// Status of a NoETL construct in Millrace.
const (
	compatSupported = "supported"
	compatDiffers   = "supported, with a difference"
	compatInert     = "accepted, no effect"
	compatWarned    = "accepted with a warning"
	compatRefused   = "refused"
)

// compatRow is one NoETL construct: what Millrace does with it and why.
type compatRow struct {
	construct, status, note string
}

// compatRows is the table of docs/compat.md. The refused tool kinds and the
// tools' inert keys and alias groups come from the parser's own tables, so
// the document cannot drift from the code; the corpus tests check that
// every refusal they expect is a refused row here.
func compatRows() []compatRow {
	rows := []compatRow{
		{"`apiVersion: noetl.io/v2`, `kind: Playbook`", compatSupported, "`millrace.io/v1` too"},
		{"`metadata` name, path, description, tags, labels, version", compatSupported, "labels and version are kept for the catalog"},
		{"`metadata.path` with a leading `/`", compatDiffers, "the `/` is dropped: catalog paths are relative to its root"},
		{"`metadata.exposes_as_mcp`", compatInert, "checked to be a boolean; Millrace has no MCP face"},
		{"`workload`", compatSupported, "payload keys override it"},
		{"`keychain` entry with `credential`", compatSupported, "resolved on the worker from a stored credential"},
		{"`keychain` `kind`, `scope`", compatInert, "kept as written; a worker resolves the entry for each command, so there is no token lifetime to scope"},
		{"provider keychain (`provider`, `auth`, `map`, `token`, `auto_renew`, `endpoint`, `service_account_secret`, `target_audience`, ...)", compatRefused, "Millrace lacks OAuth and provider token minting; store the token as a credential"},
		{"`workbook` entries, `kind: workbook` calls, entry `assert`", compatSupported, "a call's key replaces the entry's key of the same alias group"},
		{"`executor.requires.tools`", compatDiffers, "checked against the kinds this build runs: a missing one refuses the playbook up front"},
		{"`executor.spec.entry_step`", compatSupported, "the run starts there"},
		{"`executor.profile`, `version`, `requires.features`, `spec.policy`", compatInert, "NoETL's runtime contract and its placeholder defaults; the runtime is chosen by `millrace run --runtime`"},
		{"`executor.spec.final_step`", compatRefused, "Millrace has no finalization step; route to it from the last step"},
		{"`executor.spec.no_next_is_error: true`", compatRefused, "a step whose arcs are all false ends its branch; `false` is accepted"},
		{"top-level `vars`", compatRefused, "NoETL v10 rejects it too; use workload and `set`"},
		{"step `step`, `desc`, `input`, `tool` (mapping or task list), `loop`, `set`, `next`, `timeout`", compatSupported, ""},
		{"step `pool` (Millrace's own; NoETL has none)", compatSupported, "routes the step's commands to the workers of that pool (`MILLRACE_WORKER_POOL`); see docs/playbooks.md, \"Worker pools\""},
		{"step without `tool`", compatRefused, "NoETL's validator refuses it too; a step that only routes is `tool: {kind: noop}`"},
		{"step-level `output`", compatInert, "NoETL v10 ignores it too (it moved into tool.output)"},
		{"step `spec.policy.admit`", compatWarned, "NoETL checks admission rules but its engine never enforces them; Millrace neither, and warns: put a `when` on the arcs that lead to the step"},
		{"step `spec` other than `policy.admit`", compatRefused, "a tool's policy goes under the tool, a time limit is the step's `timeout`"},
		{"step `command` (no tool)", compatRefused, "NoETL refuses it too; a step runs its tool"},
		{"step `when`, `case`, `args`, `data`", compatRefused, "legacy forms NoETL v10 rejects; the hint names the v10 form"},
		{"`next.spec.mode` exclusive / inclusive", compatSupported, "see docs/playbooks.md for fan-out and joins"},
		{"`next.spec.on_no_match` complete / quiet", compatDiffers, "both end the branch; the run completes once no branch is active"},
		{"arc `step`, `when`, `set`", compatSupported, ""},
		{"`output` in an arc's `when`/`set` and a step's `set`", compatSupported, "the step's result in a policy rule's envelope (`output.data.rows`, `output.status`)"},
		{"arc `cond`", compatWarned, "not NoETL's: NoETL ignores it and so does Millrace (the arc acts unguarded); the warning says to write `when`"},
		{"unreachable step", compatWarned, "NoETL runs the playbook; the step never runs"},
		{"`loop.in`, `iterator`, `spec.mode` sequential / parallel", compatSupported, ""},
		{"`loop.spec.max_in_flight` as a template", compatSupported, "rendered to a whole number when the loop starts"},
		{"`loop.spec.policy.exec` distributed / local", compatDiffers, "every iteration is its own command either way; to run a step on certain workers, give it a `pool`"},
		{"`loop.spec.policy.results`", compatInert, "NoETL's loop policy has no such key and ignores it; results stay in item order"},
		{"`loop.cursor` (`kind: postgres`, `auth`, `claim`), `loop.spec.mode: cursor`, `spec.frame.max_rows` / `row_concurrency` / `process`", compatSupported, "max_in_flight commands each claim up to `{{ __frame_max_rows }}` rows and run the tasks per row until a claim returns none; see docs/playbooks.md, \"Cursor loops\""},
		{"`loop.spec.frame.max_seconds` / `max_bytes` / `lease_seconds` / `heartbeat_seconds`", compatInert, "NoETL only logs max_seconds and max_bytes; the claim SQL reclaims stale rows, and the worker heartbeats the draining command itself"},
		{"tool `spec.policy.rules` when / else / then", compatSupported, "`- else:` with `then` beside it is an else rule, as in NoETL"},
		{"`then.do` retry / fail / continue / jump / break, `attempts`, `backoff` fixed / exponential / linear / none, `delay`, `set`", compatSupported, "`iter.*` targets and jump/break in task lists: see docs/playbooks.md"},
		{"tool `output` (`store`, `select`, `output_select`, `inline_max_bytes`, `preview_max_bytes`, `scope`)", compatInert, "Millrace stores every result itself (by reference above a size limit) with every field readable"},
		{"tool `output.accumulate`, `output.as`", compatRefused, "collect pages with `iter.*` and `do: jump`; read a result by its step or task name"},
		{"external `script:` on python, postgres, duckdb", compatRefused, "Millrace runs no script files (file, GCS, S3, HTTP); put the code inline"},
		{"python `iterator`", compatRefused, "its only fixture is refused for its `subscription` tool anyway; the hint maps `iterator: {items: X, item: n}` to the step's `loop: {in: X, iterator: n}`, one command per item"},
		{"python `code`, `def main(...)`, `libs`, `input`, `env`, `timeout`", compatSupported, "main's return value is the result"},
		{"python `auth`", compatSupported, "as NoETL: a Google service account becomes GOOGLE_APPLICATION_CREDENTIALS (a file removed after the run), HMAC/S3 keys AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, Azure AZURE_STORAGE_CONNECTION_STRING; only from stored credentials"},
		{"duckdb `auth` (secret name -> `{source: credential, tool, key, scope}` or a credential name), `gcs_credential`", compatDiffers, "postgres, GCS HMAC and S3 secrets are created from stored credentials; the postgres or httpfs extension must already be installed on the worker (nothing is downloaded); GCS service accounts and workload identity are refused at run time: use HMAC keys"},
		{"playbook `path`, `version`, `return_step`, `timeout`", compatSupported, ""},
		{"playbook `retry: {max_attempts, retry_on}`", compatDiffers, "NoETL's runtime does not read it for this tool; Millrace applies it as a policy retry rule: retry_on `timeout` retries retryable errors (timeouts), `error` any error"},
		{"playbook `task`, `name`", compatInert, "NoETL metadata on a playbook call"},
	}
	for _, kind := range slices.Sorted(func(yield func(string) bool) {
		for k := range toolKeyTable {
			if !yield(k) {
				return
			}
		}
	}) {
		spec := toolKeyTable[kind]
		for _, g := range spec.groups {
			note := fmt.Sprintf("read as `%s`", g.canonical)
			if g.canonical == "" {
				note = "one of them per tool: they differ in how the value is sent"
			}
			rows = append(rows, compatRow{fmt.Sprintf("%s `%s`", kind, strings.Join(g.keys, "`, `")), compatSupported, note})
		}
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range spec.inert {
				if !yield(k) {
					return
				}
			}
		}) {
			rows = append(rows, compatRow{fmt.Sprintf("%s `%s`", kind, k), compatInert, spec.inert[k].why})
		}
	}
	for _, kind := range slices.Sorted(func(yield func(string) bool) {
		for k := range refusedKinds {
			if !yield(k) {
				return
			}
		}
	}) {
		rows = append(rows, compatRow{fmt.Sprintf("tool kind `%s`", kind), compatRefused, "instead: " + refusedKinds[kind]})
	}
	return rows
}

func compatMarkdown() string {
	var b strings.Builder
	b.WriteString("| NoETL construct | in Millrace | why, or what differs |\n|---|---|---|\n")
	for _, r := range compatRows() {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.construct, r.status, strings.ReplaceAll(r.note, "|", "\\|"))
	}
	return b.String()
}

const (
	compatDoc   = "../../docs/compat.md"
	compatBegin = "<!-- BEGIN GENERATED: constructs (internal/playbook/compat_test.go) -->\n"
	compatEnd   = "<!-- END GENERATED -->\n"
)

// docs/compat.md shows exactly compatRows. With -update the test rewrites
// the table between the markers instead.
func TestCompatDocIsCurrent(t *testing.T) {
	doc, err := os.ReadFile(compatDoc)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i, j := strings.Index(s, compatBegin), strings.Index(s, compatEnd)
	if i < 0 || j < i {
		t.Fatalf("docs/compat.md has no %q ... %q section", strings.TrimSpace(compatBegin), strings.TrimSpace(compatEnd))
	}
	i += len(compatBegin)
	if s[i:j] == compatMarkdown() {
		return
	}
	if *update {
		if err := os.WriteFile(compatDoc, []byte(s[:i]+compatMarkdown()+s[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("docs/compat.md is out of date; regenerate it with `go test ./internal/playbook -run TestCompatDocIsCurrent -update`")
}

// refusedConstruct returns the refused row whose construct names c.
func refusedConstruct(c string) (compatRow, bool) {
	for _, r := range compatRows() {
		if r.status == compatRefused && strings.Contains(r.construct, c) {
			return r, true
		}
	}
	return compatRow{}, false
}
