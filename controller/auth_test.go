package controller

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

const (
	nodeToken  = "node-token-gpu-00-0123456789"
	adminToken = "admin-token-0123456789abcdef"
)

func testTokens(t testing.TB) []Token {
	t.Helper()
	toks, err := ParseTokens([]byte(`
- name: gpu-00
  token_sha256: ` + HashToken(nodeToken) + `
- name: ops
  token: ` + adminToken + `
  admin: true
`))
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

func TestParseTokensErrors(t *testing.T) {
	_, err := ParseTokens([]byte(`
- name: ""
  token: short
- name: b
- name: c
  token: aaaaaaaaaaaaaaaaaaaa
  token_sha256: ` + HashToken("x") + `
- name: d
  token_sha256: xyz
- name: e
  token: aaaaaaaaaaaaaaaaaaaa
- name: f
  token_sha256: ` + HashToken("aaaaaaaaaaaaaaaaaaaa") + `
`))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"[0].name: is empty", "[0].token: is shorter", "[1]: has neither", "[2]: has both", "[3].token_sha256: is not 64 hex", "[5]: has the token of [4]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := ParseTokens([]byte("- name: a\n  secret: x\n")); err == nil {
		t.Error("unknown key: no error")
	}
	if toks, err := ParseTokens(nil); err != nil || len(toks) != 0 {
		t.Errorf("empty file: %v %v", toks, err)
	}
}

func TestIdentify(t *testing.T) {
	a := NewAuthenticator(testTokens(t), []string{"admin"})
	cert := func(cn string) *tls.ConnectionState {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c}}}
	}
	for _, tc := range []struct {
		name, auth string
		tls        *tls.ConnectionState
		want       Identity
		err        error
	}{
		{name: "node token", auth: "Bearer " + nodeToken, want: Identity{Name: "gpu-00", Via: "token"}},
		{name: "admin token", auth: "bearer " + adminToken, want: Identity{Name: "ops", Admin: true, Via: "token"}},
		{name: "wrong token", auth: "Bearer nope-nope-nope-nope", err: ErrBadCredentials},
		{name: "basic auth", auth: "Basic Zm9vOmJhcg==", err: ErrBadCredentials},
		{name: "wrong token with a cert", auth: "Bearer nope", tls: cert("gpu-01"), err: ErrBadCredentials},
		{name: "node cert", tls: cert("gpu-01"), want: Identity{Name: "gpu-01", Via: "certificate"}},
		{name: "admin cert", tls: cert("admin"), want: Identity{Name: "admin", Admin: true, Via: "certificate"}},
		{name: "unverified cert", tls: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{Subject: pkix.Name{CommonName: "admin"}}}}, err: ErrNoIdentity},
		{name: "nothing", err: ErrNoIdentity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/nodes", nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			r.TLS = tc.tls
			got, err := a.Identify(r)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("got %+v %v, want %+v %v", got, err, tc.want, tc.err)
			}
		})
	}
}
