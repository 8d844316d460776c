package tools

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// seamEnv is a worker Env for tests: named credentials and a child-playbook
// runner that records its requests.
type seamEnv struct {
	creds map[string]map[string]any
	child func(ctx context.Context, req ChildRequest) (any, error)

	mu   sync.Mutex
	reqs []ChildRequest
}

func (e *seamEnv) Credential(_ context.Context, name string) (map[string]any, error) {
	c, ok := e.creds[name]
	if !ok {
		return nil, errors.New("credential not found")
	}
	return c, nil
}

func (e *seamEnv) RunPlaybook(ctx context.Context, req ChildRequest) (any, error) {
	e.mu.Lock()
	e.reqs = append(e.reqs, req)
	e.mu.Unlock()
	if e.child == nil {
		return nil, errors.New("no child runner")
	}
	return e.child(ctx, req)
}

func (e *seamEnv) requests() []ChildRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]ChildRequest(nil), e.reqs...)
}

// playbookCompositionTask is playbook_composition.yaml's save_profile task
// as the engine renders it for one loop item.
func playbookCompositionTask() map[string]any {
	return map[string]any{
		"kind":        "playbook",
		"name":        "save_profile",
		"task":        "process_users",
		"path":        "fixtures/playbooks/playbook_composition/user_profile_scorer",
		"return_step": "finalize_result",
		"input": map[string]any{
			"user_data":         map[string]any{"name": "Alice", "age": 28.0},
			"execution_context": "123",
		},
	}
}

func TestPlaybookRunsChild(t *testing.T) {
	t.Parallel()
	want := map[string]any{"user_name": "Alice", "profile_score": 61.2, "score_category": "Mid-Level"}
	env := &seamEnv{child: func(context.Context, ChildRequest) (any, error) { return want, nil }}
	got, err := Run(WithEnv(t.Context(), env), playbookCompositionTask())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("result = %#v, want the child's result %#v", got, want)
	}
	wantReq := ChildRequest{
		Path:       "fixtures/playbooks/playbook_composition/user_profile_scorer",
		Payload:    map[string]any{"user_data": map[string]any{"name": "Alice", "age": 28.0}, "execution_context": "123"},
		ReturnStep: "finalize_result",
	}
	if reqs := env.requests(); len(reqs) != 1 || !reflect.DeepEqual(reqs[0], wantReq) {
		t.Fatalf("requests = %#v, want one %#v", reqs, wantReq)
	}
}

func TestPlaybookVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		version any
		want    int
	}{{nil, 0}, {3.0, 3}, {"7", 7}, {"", 0}, {int64(2), 2}} {
		env := &seamEnv{child: func(context.Context, ChildRequest) (any, error) { return nil, nil }}
		cfg := map[string]any{"kind": "playbook", "path": "a/b", "version": tc.version}
		if _, err := Run(WithEnv(t.Context(), env), cfg); err != nil {
			t.Fatalf("version %#v: %v", tc.version, err)
		}
		if got := env.requests()[0].Version; got != tc.want {
			t.Errorf("version %#v: request version %d, want %d", tc.version, got, tc.want)
		}
	}
}

func TestPlaybookChildFailure(t *testing.T) {
	t.Parallel()
	ctx := WithEnv(t.Context(), &seamEnv{child: func(context.Context, ChildRequest) (any, error) {
		return nil, errors.New("step score_age failed: KeyError")
	}})
	e := runErr(t, ctx, map[string]any{"kind": "playbook", "path": "a/child"})
	if e.Kind != "playbook" || e.Retryable ||
		!strings.Contains(e.Message, "child playbook a/child failed: step score_age failed: KeyError") {
		t.Fatalf("error = %+v, want non-retryable playbook error naming the child and its failure", e)
	}

	// An Env that reports a structured error keeps it as is.
	own := &Error{Kind: "playbook", Message: "child not registered", Retryable: false}
	ctx = WithEnv(t.Context(), &seamEnv{child: func(context.Context, ChildRequest) (any, error) { return nil, own }})
	if e := runErr(t, ctx, map[string]any{"kind": "playbook", "path": "a/child"}); *e != *own {
		t.Fatalf("error = %+v, want the Env's %+v", e, own)
	}
}

func TestPlaybookCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	env := &seamEnv{child: func(ctx context.Context, _ ChildRequest) (any, error) {
		cancel() // the worker gives up while the child runs
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	e := runErr(t, WithEnv(ctx, env), map[string]any{"kind": "playbook", "path": "a/child"})
	if e.Kind != ErrorKindCanceled || !e.Retryable {
		t.Fatalf("error = %+v, want retryable %q", e, ErrorKindCanceled)
	}
}

func TestPlaybookNeedsWorker(t *testing.T) {
	t.Parallel()
	e := runErr(t, t.Context(), playbookCompositionTask())
	if e.Kind != ErrorKindConfig || e.Retryable || !strings.Contains(e.Message, "needs a worker") {
		t.Fatalf("error = %+v, want a config error saying a worker is needed", e)
	}
}

func TestPlaybookBadConfig(t *testing.T) {
	t.Parallel()
	ctx := WithEnv(t.Context(), &seamEnv{})
	for _, tc := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"kind": "playbook"}, `"path" is required`},
		{map[string]any{"kind": "playbook", "path": 1.0}, `"path" must be a string`},
		{map[string]any{"kind": "playbook", "path": "a", "version": 1.5}, `"version" must be a positive whole number`},
		{map[string]any{"kind": "playbook", "path": "a", "version": "v2"}, `"version" must be a positive whole number`},
		{map[string]any{"kind": "playbook", "path": "a", "version": 0.0}, `"version" must be a positive whole number`},
		{map[string]any{"kind": "playbook", "path": "a", "input": "x"}, `"input" must be a mapping`},
		{map[string]any{"kind": "playbook", "path": "a", "return_step": []any{}}, `"return_step" must be a string`},
	} {
		e := runErr(t, ctx, tc.cfg)
		if e.Kind != ErrorKindConfig || !strings.Contains(e.Message, tc.want) {
			t.Errorf("Run(%v) = %+v, want config error containing %q", tc.cfg, e, tc.want)
		}
	}
}

func TestNewToolKinds(t *testing.T) {
	t.Parallel()
	kinds := Kinds()
	for kind, want := range map[string][]string{
		"python":   {"auth", "code", "env", "input", "libs", "timeout"},
		"nats":     {"auth", "bucket", "create_bucket", "data", "key", "operation", "subject", "url", "value"},
		"playbook": {"input", "name", "path", "payload", "return_step", "task", "timeout", "version"},
	} {
		if got := kinds[kind]; !reflect.DeepEqual(got, want) {
			t.Errorf("Kinds()[%q] = %v, want %v", kind, got, want)
		}
	}
}

func TestPlaybookToolNoETLKeys(t *testing.T) {
	t.Parallel()
	env := &seamEnv{child: func(ctx context.Context, req ChildRequest) (any, error) {
		if req.Payload["slow"] == true {
			<-ctx.Done() // a child that outlives the timeout
			return nil, ctx.Err()
		}
		return req.Payload, nil
	}}
	ctx := WithEnv(t.Context(), env)
	res, err := Run(ctx, map[string]any{"kind": "playbook", "path": "c", "payload": map[string]any{"a": 1.0}, "timeout": 5.0})
	if err != nil || !reflect.DeepEqual(res, map[string]any{"a": 1.0}) {
		t.Fatalf("payload: %v, %v", res, err)
	}
	e := runErr(t, ctx, map[string]any{"kind": "playbook", "path": "c", "payload": map[string]any{"slow": true}, "timeout": 0.05})
	if e.Kind != "playbook" || !e.Retryable || !strings.Contains(e.Message, "did not finish within") {
		t.Fatalf("timeout: %+v", e)
	}
	e = runErr(t, ctx, map[string]any{"kind": "playbook", "path": "c", "payload": map[string]any{}, "input": map[string]any{}})
	if e.Kind != ErrorKindConfig || !strings.Contains(e.Message, `"payload" and "input"`) {
		t.Fatalf("payload and input: %+v", e)
	}
	if e := runErr(t, ctx, map[string]any{"kind": "playbook", "path": "c", "timeout": -1.0}); e.Kind != ErrorKindConfig {
		t.Fatalf("negative timeout: %+v", e)
	}
}
