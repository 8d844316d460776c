package playbook

import "testing"

func TestAliasPairsRefused(t *testing.T) {
	t.Parallel()
	kinds := KindSet{"http": {"method", "url", "endpoint", "body", "json", "payload", "data"}}
	checkProblems(t, head+"  - step: a\n    tool:\n      kind: http\n      url: http://x\n      endpoint: http://y\n",
		kinds, []want{{11, `"url" and "endpoint" say the same thing`, "keep one of url, endpoint"}}, true)
	checkProblems(t, head+"  - step: a\n    tool:\n      kind: http\n      url: http://x\n      json: {a: 1}\n      data: {b: 2}\n",
		kinds, []want{{12, `"json" and "data" say the same thing`, "keep one of json, data"}}, true)
	if _, err := Parse("pb.yaml", []byte(head+"  - step: a\n    tool: {kind: http, endpoint: http://x, payload: {a: 1}}\n"), kinds); err != nil {
		t.Fatalf("endpoint with payload: %v", err)
	}
}
