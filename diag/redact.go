package diag

import (
	"bytes"
	"fmt"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Redaction for the bundle: a support bundle leaves the host, so nothing
// in it may carry a credential. The configuration is rewritten with every
// secret-bearing value replaced (paths to key, certificate and token files
// stay: they say where the secret is, not what it is), and every entry's
// bytes are scanned for PEM private keys.

// Redacted replaces a secret value.
const Redacted = "<redacted>"

// privateKeyMarker replaces a PEM private key block in a bundle entry. It
// must not itself match the scan.
const privateKeyMarker = "[private key removed by roce-agent diag]"

// redactSecretWords mark a configuration key whose inline value is a secret.
var redactSecretWords = []string{"token", "password", "passwd", "passphrase", "secret", "credential", "bearer", "auth", "private", "hash", "psk", "apikey", "api_key"}

// redactSecretKey reports whether a configuration key names an inline secret.
// A key that names a file or directory (token_file, key_file, ca_file)
// holds a path, which may stay.
func redactSecretKey(key string) bool {
	k := strings.ToLower(key)
	for _, suffix := range []string{"_file", "_dir", "_path", "file", "_files"} {
		if strings.HasSuffix(k, suffix) {
			return false
		}
	}
	if k == "key" || strings.HasSuffix(k, "_key") || strings.HasPrefix(k, "key_") {
		return true
	}
	for _, w := range redactSecretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// redactConfig returns v (an agent.Config, or any configuration struct)
// as the generic tree its file has: keys from the mapstructure tags
// (squashed structs merged into their parent), durations as strings, and
// every secret replaced by Redacted: the values of secret keys (tokens,
// passwords, basic-auth hashes), a password or secret query parameter in
// a URL, and any string that holds PEM material.
func redactConfig(v any) any {
	return redactValue(reflect.ValueOf(v), "")
}

var redactDurationType = reflect.TypeOf(time.Duration(0))

func redactValue(v reflect.Value, key string) any {
	if !v.IsValid() {
		return nil
	}
	if v.Type() == redactDurationType {
		return time.Duration(v.Int()).String()
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return redactValue(v.Elem(), key)
	case reflect.Struct:
		out := map[string]any{}
		redactStruct(v, out)
		return out
	case reflect.Map:
		if v.IsNil() {
			return nil
		}
		out := make(map[string]any, v.Len())
		iter := v.MapRange()
		for iter.Next() {
			k := fmt.Sprint(iter.Key().Interface())
			if redactSecretKey(k) || redactSecretKey(key) {
				out[k] = redactSecret(iter.Value())
				continue
			}
			out[k] = redactValue(iter.Value(), k)
		}
		return out
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return nil
		}
		if v.Type().Elem().Kind() == reflect.Uint8 { // []byte: inline material
			if redactSecretKey(key) || v.Len() > 0 && redactHasPEM(fmt.Sprint(v.Interface())) {
				return Redacted
			}
			return fmt.Sprintf("%d bytes", v.Len())
		}
		out := make([]any, v.Len())
		for i := range out {
			if redactSecretKey(key) {
				out[i] = redactSecret(v.Index(i))
				continue
			}
			out[i] = redactValue(v.Index(i), key)
		}
		return out
	case reflect.String:
		s := v.String()
		if s != "" && redactSecretKey(key) {
			return Redacted
		}
		return redactString(s)
	case reflect.Func, reflect.Chan, reflect.UnsafePointer:
		return nil
	}
	if redactSecretKey(key) && !v.IsZero() {
		return Redacted
	}
	switch v.Kind() {
	case reflect.Bool:
		return v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint()
	case reflect.Float32, reflect.Float64:
		return v.Float()
	}
	return fmt.Sprint(v)
}

// redactSecret replaces the value of a secret key: empty stays empty (so
// the bundle shows that none was set), anything else is Redacted.
func redactSecret(v reflect.Value) any {
	if !v.IsValid() || v.IsZero() {
		return redactValue(v, "")
	}
	return Redacted
}

// redactContainer reports a map or a list, whose elements are redacted
// one by one under a secret key (a basic-auth user list keeps its user
// names).
func redactContainer(v reflect.Value) bool {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return false
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Map:
		return true
	case reflect.Slice, reflect.Array:
		return v.Type().Elem().Kind() != reflect.Uint8
	}
	return false
}

func redactStruct(v reflect.Value, out map[string]any) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("mapstructure")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		fv := v.Field(i)
		if strings.Contains(opts, "squash") || (f.Anonymous && name == "") {
			for fv.Kind() == reflect.Pointer {
				if fv.IsNil() {
					break
				}
				fv = fv.Elem()
			}
			if fv.Kind() == reflect.Struct {
				redactStruct(fv, out)
				continue
			}
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if redactSecretKey(name) && !redactContainer(fv) {
			out[name] = redactSecret(fv)
			continue
		}
		out[name] = redactValue(fv, name)
	}
}

// redactString clears the secrets a string value may carry on its own: a
// URL's password or secret query parameters, and PEM material.
func redactString(s string) string {
	if redactHasPEM(s) {
		return Redacted
	}
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	changed := false
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
			changed = true
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		keys := make([]string, 0, len(q))
		for k := range q {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if redactSecretKey(k) || strings.EqualFold(k, "key") || strings.EqualFold(k, "sig") || strings.EqualFold(k, "signature") {
				q[k] = []string{"REDACTED"}
				changed = true
			}
		}
		u.RawQuery = q.Encode()
	}
	if !changed {
		return s
	}
	return u.String()
}

// redactHasPEM reports whether s holds PEM armour of a key.
func redactHasPEM(s string) bool {
	return strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, "-----BEGIN")
}

var (
	pemPrivateKey = []byte("PRIVATE KEY-----")
	pemBegin      = []byte("-----BEGIN")
	pemEnd        = []byte("-----END")
)

// redactPrivateKeys replaces every PEM private key block in b ("-----BEGIN
// [RSA |EC |OPENSSH |ENCRYPTED ]PRIVATE KEY-----" to its END line, or to
// the end of b when the block is cut short) with privateKeyMarker, and
// returns the result and how many blocks it replaced. A lone END line is
// replaced too. b is not modified.
func redactPrivateKeys(b []byte) ([]byte, int) {
	if !bytes.Contains(b, pemPrivateKey) {
		return b, 0
	}
	var out bytes.Buffer
	out.Grow(len(b))
	n := 0
	for {
		i := bytes.Index(b, pemPrivateKey)
		if i < 0 {
			out.Write(b)
			return out.Bytes(), n
		}
		n++
		// The block starts at the marker's "-----BEGIN" (or "-----END"
		// for a lone end line), on the same line.
		lineStart := bytes.LastIndexByte(b[:i], '\n') + 1
		start := lineStart
		if j := bytes.LastIndex(b[lineStart:i], pemBegin); j >= 0 {
			start = lineStart + j
		}
		if j := bytes.LastIndex(b[lineStart:i], pemEnd); j >= 0 && lineStart+j >= start {
			// A lone END line (its BEGIN cut off): drop it with the
			// base64 lines above it.
			out.Write(b[:keyBodyStart(b, lineStart+j)])
			out.WriteString(privateKeyMarker)
			b = b[i+len(pemPrivateKey):]
			continue
		}
		out.Write(b[:start])
		out.WriteString(privateKeyMarker)
		rest := b[i+len(pemPrivateKey):]
		// The block ends after the "PRIVATE KEY-----" of its END line.
		end := -1
		if j := bytes.Index(rest, pemEnd); j >= 0 {
			if k := bytes.Index(rest[j:], pemPrivateKey); k >= 0 {
				end = j + k + len(pemPrivateKey)
			}
		}
		if end < 0 {
			return out.Bytes(), n // cut short: the rest is key material
		}
		b = rest[end:]
	}
}

// redactKeysText is redactPrivateKeys on a string (a tool's stderr or an
// error in the manifest).
func redactKeysText(s string) string {
	if !strings.Contains(s, string(pemPrivateKey)) {
		return s
	}
	b, _ := redactPrivateKeys([]byte(s))
	return string(b)
}

// keyBodyStart walks back from a lone END marker at end over the whole
// lines above it that look like a key's base64 body, and returns where
// they start.
func keyBodyStart(b []byte, end int) int {
	start := end
	for start > 0 && b[start-1] == '\n' {
		prev := bytes.LastIndexByte(b[:start-1], '\n') + 1
		line := bytes.TrimSuffix(b[prev:start-1], []byte("\r"))
		if len(line) == 0 || !isBase64(line) {
			break
		}
		start = prev
	}
	return start
}

func isBase64(line []byte) bool {
	for _, c := range line {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return true
}
