package controller

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/roce-agent/roce-agent/fabric"
	"go.yaml.in/yaml/v3"
)

// Identity is who made a request: a node (its name) or an administrator.
type Identity struct {
	Name  string
	Admin bool
	// Via is "token" or "certificate".
	Via string
}

// Authentication failures (401).
var (
	ErrNoIdentity     = errors.New("no identity: present a client certificate or a bearer token")
	ErrBadCredentials = errors.New("bad credentials: unknown bearer token")
)

// Token is an entry of the tokens file (--tokens): a name (a node name or
// an administrator's), the token's SHA-256 in hex (preferred: the file
// then holds no secret) or the token itself, and whether it is an admin.
type Token struct {
	Name        string `yaml:"name"`
	Token       string `yaml:"token"`
	TokenSHA256 string `yaml:"token_sha256"`
	Admin       bool   `yaml:"admin"`
}

// minTokenLen is the shortest plain token accepted.
const minTokenLen = 16

// HashToken is a token's SHA-256 in hex, as token_sha256 wants it.
func HashToken(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// LoadTokens reads a tokens file (ParseTokens).
func LoadTokens(path string) ([]Token, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	toks, err := ParseTokens(data)
	if err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return toks, nil
}

// ParseTokens decodes a YAML list of tokens, refusing unknown keys, and
// reports every bad entry: no name, neither or both of token and
// token_sha256, a hash that is not 64 hex digits, a token shorter than 16
// characters, a token listed twice.
func ParseTokens(data []byte) ([]Token, error) {
	var toks []Token
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&toks); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var errs []error
	seen := map[string]int{}
	for i, t := range toks {
		field := fmt.Sprintf("[%d]", i)
		if t.Name == "" {
			errs = append(errs, &fabric.FieldError{Field: field + ".name", Reason: "is empty"})
		}
		var sum string
		switch {
		case t.Token != "" && t.TokenSHA256 != "":
			errs = append(errs, &fabric.FieldError{Field: field, Reason: "has both token and token_sha256"})
			continue
		case t.Token != "":
			if len(t.Token) < minTokenLen {
				errs = append(errs, &fabric.FieldError{Field: field + ".token", Reason: fmt.Sprintf("is shorter than %d characters", minTokenLen)})
				continue
			}
			sum = HashToken(t.Token)
		case t.TokenSHA256 != "":
			b, err := hex.DecodeString(t.TokenSHA256)
			if err != nil || len(b) != sha256.Size {
				errs = append(errs, &fabric.FieldError{Field: field + ".token_sha256", Reason: "is not 64 hex digits"})
				continue
			}
			sum = hex.EncodeToString(b)
		default:
			errs = append(errs, &fabric.FieldError{Field: field, Reason: "has neither token nor token_sha256"})
			continue
		}
		if j, dup := seen[sum]; dup {
			errs = append(errs, &fabric.FieldError{Field: field, Reason: fmt.Sprintf("has the token of [%d]", j)})
		}
		seen[sum] = i
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return toks, nil
}

type tokenEntry struct {
	name  string
	sum   [sha256.Size]byte
	admin bool
}

// Authenticator tells who made a request: a bearer token of the tokens
// file or a verified TLS client certificate (its CommonName), and whether
// that identity is an administrator (an admin token, or a name in the
// admin list).
type Authenticator struct {
	// tokens are by the SHA-256 of the token: a lookup costs the same
	// for ten tokens or fifty thousand, and what it could leak by its
	// timing is about a digest the caller cannot steer.
	tokens map[[sha256.Size]byte]tokenEntry
	admins map[string]bool
}

// NewAuthenticator builds an Authenticator from checked tokens
// (ParseTokens) and the admin names.
func NewAuthenticator(tokens []Token, admins []string) *Authenticator {
	a := &Authenticator{admins: map[string]bool{}, tokens: make(map[[sha256.Size]byte]tokenEntry, len(tokens))}
	for _, n := range admins {
		a.admins[n] = true
	}
	for _, t := range tokens {
		e := tokenEntry{name: t.Name, admin: t.Admin}
		if t.Token != "" {
			e.sum = sha256.Sum256([]byte(t.Token))
		} else {
			b, _ := hex.DecodeString(t.TokenSHA256)
			copy(e.sum[:], b)
		}
		a.tokens[e.sum] = e
	}
	return a
}

// Identify returns the identity of a request. A request with an
// Authorization header is judged by its bearer token alone (a wrong token
// is refused even with a good certificate); otherwise a client certificate
// that the TLS handshake verified names it. The error is ErrNoIdentity or
// ErrBadCredentials.
func (a *Authenticator) Identify(r *http.Request) (Identity, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		tok = strings.TrimSpace(tok)
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return Identity{}, ErrBadCredentials
		}
		sum := sha256.Sum256([]byte(tok))
		e, ok := a.tokens[sum]
		if !ok || subtle.ConstantTimeCompare(sum[:], e.sum[:]) != 1 {
			return Identity{}, ErrBadCredentials
		}
		return Identity{Name: e.name, Admin: e.admin || a.admins[e.name], Via: "token"}, nil
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		name := r.TLS.PeerCertificates[0].Subject.CommonName
		if name != "" {
			return Identity{Name: name, Admin: a.admins[name], Via: "certificate"}, nil
		}
	}
	return Identity{}, ErrNoIdentity
}
