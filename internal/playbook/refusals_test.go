package playbook

import "testing"

// What Millrace deliberately lacks is refused naming the construct, saying
// Millrace lacks it, and saying what to use instead.
func TestDeliberateRefusals(t *testing.T) {
	t.Parallel()
	kinds := KindSet{"python": {"code", "input"}, "postgres": {"auth", "command"}, "noop": {}}
	for kind := range refusedKinds {
		checkProblems(t, head+"  - step: a\n    tool: {kind: "+kind+", x: 1}\n", kinds, []want{
			{8, `tool kind "` + kind + `" is NoETL's; Millrace does not implement it`, refusedKinds[kind]},
		}, true)
	}
	checkProblems(t, head+"  - step: a\n    tool:\n      kind: python\n      script: {uri: ./x.py, source: {type: file}}\n", kinds, []want{
		{10, `unsupported NoETL key "script" in python tool: Millrace does not implement it`, "inline in `code:`"},
	}, true)
	checkProblems(t, head+"  - step: a\n    tool:\n      kind: postgres\n      script: {uri: gs://b/x.sql}\n", kinds, []want{
		{10, `unsupported NoETL key "script" in postgres tool`, "inline in `command:`"},
	}, true)
	kc := "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t, path: tests/t}\nkeychain:\n" +
		"  - name: tok\n    kind: oauth2\n    scope: global\n    endpoint: https://idp/token\n    data: {grant_type: client_credentials}\n" +
		"  - name: pg\n    kind: credential\n    scope: local\n    credential: pg_local\n" +
		"workflow:\n  - step: a\n    tool: {kind: python, code: \"{{ keychain.tok.access_token }}\"}\n"
	// One problem for the provider entry (none for reading it), none for a
	// credential entry with NoETL's scope.
	checkProblems(t, kc, kinds, []want{
		{5, `keychain entry "tok" uses NoETL's provider keychain (endpoint, data); Millrace lacks OAuth`, "store it as a credential"},
	}, true)
}
