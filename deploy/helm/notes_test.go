package helm_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The verification steps export what `millrace nats …` needs to reach a
// NATS that wants credentials, read from where the pods read them.
func TestNotesExportNATSCredentials(t *testing.T) {
	t.Parallel()
	cases := []struct {
		vals string
		want []string
		not  []string
	}{
		{"", nil, []string{"NATS_USER", "NATS_CREDS"}},
		{"secrets: {natsUser: u, natsPassword: p}", []string{
			"export NATS_USER=$(kubectl -n " + namespace + " get secret " + fullname + " -o jsonpath='{.data.NATS_USER}' | base64 -d)",
			"export NATS_PASSWORD=$(kubectl -n " + namespace + " get secret " + fullname + " -o jsonpath='{.data.NATS_PASSWORD}' | base64 -d)",
		}, []string{"NATS_CREDS"}},
		{"natsCredentials: {existingSecret: nats-creds, key: user.creds}", []string{
			"kubectl -n " + namespace + " get secret nats-creds -o jsonpath='{.data.user\\.creds}' | base64 -d > nats.creds",
			"export NATS_CREDS=$PWD/nats.creds",
		}, []string{"NATS_USER"}},
	}
	for _, tc := range cases {
		notes := notesOf(mustRender(t, values(t, tc.vals)))
		for _, w := range tc.want {
			if !strings.Contains(notes, w) {
				t.Errorf("values %q: NOTES.txt lacks %q:\n%s", tc.vals, w, notes)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(notes, n) {
				t.Errorf("values %q: NOTES.txt mentions %s", tc.vals, n)
			}
		}
	}
	if notes := notesOf(mustRender(t, nil)); !strings.Contains(notes, "nats consumer ls") {
		t.Error("NOTES.txt does not map the seeds' `nats consumer ls` to millrace nats consumer report")
	}
}

// Without a cluster to look up (helm template, Argo CD) generated tokens
// and the secret key change at every render: the notes say so and point to
// existingSecret, unless nothing is generated.
func TestNotesWarnGitOpsAboutGeneratedSecrets(t *testing.T) {
	t.Parallel()
	k := strings.Repeat("ab", 32)
	tok := "mrt_" + strings.Repeat("A", 43)
	all := "secrets: {secretKey: " + k + ", workerToken: " + tok + ", gatewayToken: " + tok + ", adminToken: " + tok + "}"
	cases := []struct {
		vals string
		warn bool
	}{
		{"", true},
		{"existingSecret: mine", false},
		{all, false},
		{"secrets: {secretKey: " + k + ", workerToken: " + tok + "}", true},
	}
	for _, tc := range cases {
		notes := notesOf(mustRender(t, values(t, tc.vals)))
		got := strings.Contains(notes, "use existingSecret")
		if got != tc.warn {
			t.Errorf("values %q: GitOps WARNING %v, want %v:\n%s", tc.vals, got, tc.warn, notes)
		}
	}
}

// The docs say which Helm the chart is tested with, and that is the Helm
// module the tests build against.
func TestDocsSayWhichHelmIsTested(t *testing.T) {
	t.Parallel()
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*helm\.sh/helm/v4 v([0-9.]+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod does not require helm.sh/helm/v4")
	}
	ver := "v" + string(m[1])
	for _, doc := range []string{"millrace/README.md", "../../docs/operations.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(strings.Fields(string(b)), " ")
		if strings.Contains(text, "Helm 3.8 or later,") {
			t.Errorf("%s requires Helm 3.8 or later, but the tests use Helm %s's SDK", doc, ver)
		}
		if !strings.Contains(text, "Helm 4's Go SDK") || !strings.Contains(text, ver) {
			t.Errorf("%s does not say the chart is tested with Helm 4's Go SDK %s", doc, ver)
		}
	}
}

// The worker's liveness comment must not promise more than /healthz
// proves.
func TestWorkerLivenessCommentIsHonest(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("millrace/templates/worker-deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(strings.ReplaceAll(string(b), "#", "")), " ")
	if strings.Contains(text, "wedged worker stops answering") {
		t.Error("worker-deployment.yaml claims a wedged worker stops answering /healthz; it only proves the process serves HTTP")
	}
}
