package bus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// testCA is a certificate authority made in the test, with its PEM file.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, file: file}
}

// issue signs a leaf certificate (server or client) and writes its PEM
// certificate and key; it returns the files and the tls.Certificate.
func (ca *testCA) issue(t *testing.T, dir, name string, client bool) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses, tmpl.DNSNames = nil, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	pair, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pair
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startServer runs a JetStream nats-server shaped by mutate and returns its
// client URL.
func startServer(t *testing.T, mutate func(*server.Options)) string {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	mutate(opts)
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return srv.ClientURL()
}

// connectCheck connects with cfg and proves the connection works end to
// end: a JetStream account query and a core request/reply round trip.
func connectCheck(t *testing.T, cfg Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := ConnectOnly(ctx, cfg, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	sub, err := c.NC.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	reply, err := c.NC.RequestWithContext(ctx, "echo", []byte("ping"))
	if err != nil {
		return err
	}
	if string(reply.Data) != "ping" {
		t.Fatalf("echo replied %q", reply.Data)
	}
	return nil
}

func TestConnectTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	_, _, serverPair := ca.issue(t, dir, "server", false)
	url := startServer(t, func(o *server.Options) {
		o.TLS = true
		o.TLSTimeout = 10 // seconds; a loaded CI machine is slow to handshake
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{serverPair}, MinVersion: tls.VersionTLS12}
	})

	t.Run("trusted CA", func(t *testing.T) {
		t.Parallel()
		if err := connectCheck(t, Config{URL: url, TLSCA: ca.file}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("tls scheme", func(t *testing.T) {
		t.Parallel()
		if err := connectCheck(t, Config{URL: strings.Replace(url, "nats://", "tls://", 1), TLSCA: ca.file}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		t.Parallel()
		other := newTestCA(t, t.TempDir(), "other-ca")
		err := connectCheck(t, Config{URL: url, TLSCA: other.file})
		if err == nil {
			t.Fatal("connected although the server's certificate is not signed by NATS_TLS_CA")
		}
		for _, want := range []string{"NATS_TLS_CA", other.file, "not signed"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
	t.Run("unreadable CA file", func(t *testing.T) {
		t.Parallel()
		missing := filepath.Join(t.TempDir(), "nope.pem")
		err := connectCheck(t, Config{URL: url, TLSCA: missing})
		if err == nil || !strings.Contains(err.Error(), "NATS_TLS_CA") || !strings.Contains(err.Error(), missing) {
			t.Fatalf("err = %v, want one naming NATS_TLS_CA and %s", err, missing)
		}
	})
	t.Run("not PEM", func(t *testing.T) {
		t.Parallel()
		junk := filepath.Join(t.TempDir(), "junk.pem")
		if err := os.WriteFile(junk, []byte("hello"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := connectCheck(t, Config{URL: url, TLSCA: junk})
		if err == nil || !strings.Contains(err.Error(), "NATS_TLS_CA") || !strings.Contains(err.Error(), "no PEM certificate") {
			t.Fatalf("err = %v, want one saying NATS_TLS_CA holds no certificate", err)
		}
	})
}

func TestConnectMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	_, _, serverPair := ca.issue(t, dir, "server", false)
	clientCert, clientKey, _ := ca.issue(t, dir, "client", true)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	url := startServer(t, func(o *server.Options) {
		o.TLS, o.TLSVerify, o.TLSTimeout = true, true, 10
		o.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{serverPair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS12,
		}
	})

	t.Run("client certificate", func(t *testing.T) {
		t.Parallel()
		if err := connectCheck(t, Config{URL: url, TLSCA: ca.file, TLSCert: clientCert, TLSKey: clientKey}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		t.Parallel()
		if err := connectCheck(t, Config{URL: url, TLSCA: ca.file}); err == nil {
			t.Fatal("connected without the client certificate the server requires")
		}
	})
	t.Run("key of another certificate", func(t *testing.T) {
		t.Parallel()
		_, otherKey, _ := ca.issue(t, t.TempDir(), "other", true)
		err := connectCheck(t, Config{URL: url, TLSCA: ca.file, TLSCert: clientCert, TLSKey: otherKey})
		if err == nil || !strings.Contains(err.Error(), "NATS_TLS_CERT/NATS_TLS_KEY") {
			t.Fatalf("err = %v, want one naming NATS_TLS_CERT/NATS_TLS_KEY", err)
		}
	})
}

func TestConnectNKey(t *testing.T) {
	t.Parallel()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	url := startServer(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })

	if err := connectCheck(t, Config{URL: url, NKeyFile: seedFile}); err != nil {
		t.Fatal(err)
	}
	// Without the nkey the server refuses, and the error says where to look.
	err = connectCheck(t, Config{URL: url})
	if err == nil || !strings.Contains(err.Error(), "NATS_NKEY") {
		t.Fatalf("err without nkey = %v, want a refusal mentioning NATS_NKEY", err)
	}
	// Another user's seed is refused.
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := filepath.Join(dir, "other.nk")
	if err := os.WriteFile(otherFile, otherSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := connectCheck(t, Config{URL: url, NKeyFile: otherFile}); err == nil {
		t.Fatal("connected with an nkey the server does not know")
	}
	// A file that is not a seed is named in the error.
	junk := filepath.Join(dir, "junk.nk")
	if err := os.WriteFile(junk, []byte("not a seed"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := connectCheck(t, Config{URL: url, NKeyFile: junk}); err == nil || !strings.Contains(err.Error(), "NATS_NKEY") {
		t.Fatalf("err with a junk seed file = %v, want one naming NATS_NKEY", err)
	}
	if err := connectCheck(t, Config{URL: url, NKeyFile: filepath.Join(dir, "missing.nk")}); err == nil || !strings.Contains(err.Error(), "NATS_NKEY") {
		t.Fatalf("err with a missing seed file = %v, want one naming NATS_NKEY", err)
	}
}

func TestConnectCredsFileUnreadable(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "user.creds")
	err := connectCheck(t, Config{URL: sharedServer.URL(), CredsFile: missing})
	if err == nil || !strings.Contains(err.Error(), "NATS_CREDS") || !strings.Contains(err.Error(), missing) {
		t.Fatalf("err = %v, want one naming NATS_CREDS and the file", err)
	}
}

func TestConnectUserPasswordInURL(t *testing.T) {
	t.Parallel()
	url := startServer(t, func(o *server.Options) { o.Username, o.Password = "noetl", "pa55-word" })
	withCreds := strings.Replace(url, "nats://", "nats://noetl:pa55-word@", 1)
	logs := &syncBuffer{}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := ConnectOnly(ctx, Config{URL: withCreds}, slogTo(logs))
	if err != nil {
		t.Fatal(err)
	}
	got := c.URL()
	c.Close()
	if strings.Contains(got, "pa55-word") || got == "" {
		t.Errorf("reported URL %q is empty or shows the password", got)
	}
	if !strings.Contains(logs.String(), "connected to NATS") {
		t.Fatalf("no connect line in the log: %s", logs)
	}
	if strings.Contains(logs.String(), "pa55-word") {
		t.Errorf("the log shows the password: %s", logs)
	}
	_, err = ConnectOnly(ctx, Config{URL: strings.Replace(withCreds, "pa55-word", "wr0ng-pass", 1)}, slogTo(logs))
	if err == nil {
		t.Fatal("connected with a wrong password")
	}
	if strings.Contains(err.Error(), "wr0ng-pass") || strings.Contains(logs.String(), "wr0ng-pass") {
		t.Errorf("the refusal or the log shows the password: %v / %s", err, logs)
	}
}

func slogTo(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// A server in operator (JWT) mode admits the user of a .creds file.
func TestConnectCredsFile(t *testing.T) {
	t.Parallel()
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "test-operator"
	opJWT, err := oc.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "millrace"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := ac.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	writeCreds := func(name string, signer nkeys.KeyPair) string {
		user, _ := nkeys.CreateUser()
		userPub, _ := user.PublicKey()
		seed, _ := user.Seed()
		uc := jwt.NewUserClaims(userPub)
		uc.Name = name
		userJWT, err := uc.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		creds, err := jwt.FormatUserConfig(userJWT, seed)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), name+".creds")
		if err := os.WriteFile(file, creds, 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	// JetStream in operator mode needs a system account.
	sys, _ := nkeys.CreateAccount()
	sysPub, _ := sys.PublicKey()
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	for pub, j := range map[string]string{accPub: accJWT, sysPub: sysJWT} {
		if err := resolver.Store(pub, j); err != nil {
			t.Fatal(err)
		}
	}
	url := startServer(t, func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{opClaims}
		o.AccountResolver = resolver
		o.SystemAccount = sysPub
	})

	if err := connectCheck(t, Config{URL: url, CredsFile: writeCreds("worker", acc)}); err != nil {
		t.Fatal(err)
	}
	// A user signed by an account the operator never issued is refused.
	stranger, _ := nkeys.CreateAccount()
	err = connectCheck(t, Config{URL: url, CredsFile: writeCreds("stranger", stranger)})
	if err == nil || !strings.Contains(err.Error(), "NATS_CREDS") {
		t.Fatalf("err with a foreign user = %v, want a refusal mentioning NATS_CREDS", err)
	}
}
