package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/roce-agent/roce-agent/agent"
	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// DefaultConfigPath is read when neither --config nor ROCE_AGENT_CONFIG
// names a file.
const DefaultConfigPath = "/etc/roce-agent/config.yaml"

// maxConfigBytes bounds the config file: a 256-rail config is about 30 KB.
const maxConfigBytes = 1 << 20

// configError is a config that cannot be used: missing, unreadable, empty
// or invalid. Nothing was changed; the command exits 2.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// configPath is the file to read and whether the user named it.
func configPath(flags *pflag.FlagSet) (string, bool) {
	if p, _ := flags.GetString("config"); p != "" {
		return p, true
	}
	if p := os.Getenv("ROCE_AGENT_CONFIG"); p != "" {
		return p, true
	}
	return DefaultConfigPath, false
}

// readConfigFile reads a config file without ever blocking or growing
// without bound: a regular file only (a FIFO, device or directory is
// refused before any read), at most maxConfigBytes.
func readConfigFile(path string) ([]byte, error) { return agent.ReadRegularFile(path, maxConfigBytes) }

// loadConfig merges defaults, the config file, ROCE_AGENT_* env and flags
// (later wins), rejects unknown keys and loose types, and validates the
// result. With needDesired (plan, apply, run) a config without a desired
// state (no file, an empty file, no rail with an address and no qos
// section) is refused: the agent changes nothing without one. Every error
// is a *configError.
func loadConfig(flags *pflag.FlagSet, needDesired bool) (agent.Config, error) {
	cfg, err := loadConfigE(flags, needDesired)
	if err != nil {
		return cfg, &configError{clipLines(err)}
	}
	return cfg, nil
}

func loadConfigE(flags *pflag.FlagSet, needDesired bool) (agent.Config, error) {
	def := agent.DefaultConfig()
	v := viper.New()
	v.SetEnvPrefix("ROCE_AGENT")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for key, value := range agent.SettingKeys() {
		if value == nil {
			if err := v.BindEnv(key); err != nil {
				return def, fmt.Errorf("bind env for %s: %w", key, err)
			}
			continue
		}
		v.SetDefault(key, value)
	}
	for key, flag := range map[string]string{"sysfs_root": "sysfs-root", "log.level": "log-level", "log.format": "log-format", "listen.metrics": "listen", "listen.web_config_file": "web-config-file"} {
		if f := flags.Lookup(flag); f != nil {
			if err := v.BindPFlag(key, f); err != nil {
				return def, fmt.Errorf("bind flag %s: %w", flag, err)
			}
		}
	}

	path, explicit := configPath(flags)
	data, err := readConfigFile(path)
	switch {
	case err == nil:
	case !explicit && errors.Is(err, fs.ErrNotExist) && (!needDesired || strings.TrimSpace(v.GetString("controller.url")) != ""):
		data = nil // no file: defaults, env and flags only (the controller's URL among them)
	case !explicit && errors.Is(err, fs.ErrNotExist):
		return def, fmt.Errorf("no desired state: config %s does not exist and no controller is configured; write it or pass --config (nothing was changed)", path)
	default:
		return def, fmt.Errorf("config %s: %w", path, err)
	}
	var doc map[string]any
	if data != nil {
		// Unknown keys and the document's size are checked on the parse
		// tree before anything decodes it: yaml.v3's decoding of a mapping
		// and viper's AllSettings are both quadratic in the number of keys.
		doc, err = parseDocument(data)
		if err != nil {
			return def, fmt.Errorf("config %s: %w", path, err)
		}
		if len(doc) == 0 {
			return def, fmt.Errorf("config %s: has no settings (empty, white space or comments only); roce-agent changes nothing without a desired state", path)
		}
		if unknown := agent.UnknownKeys(doc); len(unknown) > 0 {
			if len(unknown) > 8 {
				unknown = append(unknown[:8], fmt.Sprintf("and %d more", len(unknown)-8))
			}
			return def, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(unknown, ", "))
		}
		if rails, ok := doc["rails"].([]any); ok && len(rails) > maxRails {
			return def, fmt.Errorf("config %s: rails: %d entries; at most %d (rails 0-%d)", path, len(rails), maxRails, maxRails-1)
		}
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return def, fmt.Errorf("config %s: %w", path, err)
		}
	}
	var cfg agent.Config
	err = v.UnmarshalExact(&cfg, func(dc *mapstructure.DecoderConfig) {
		dc.WeaklyTypedInput = false
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(strictScalars, commaList)
	})
	if err != nil {
		// mapstructure prefixes a generic line; the rest names the field.
		msg := strings.TrimSpace(strings.TrimPrefix(err.Error(), "decoding failed due to the following error(s):"))
		if data == nil {
			return def, fmt.Errorf("settings (no config file, %s absent): %s", path, msg)
		}
		return def, fmt.Errorf("config %s: %s", path, msg)
	}
	if cfg.Controller.URL != "" {
		if err := controllerOwnedSet(doc); err != nil {
			if data == nil {
				return cfg, fmt.Errorf("invalid settings (no config file, %s absent):\n%w", path, err)
			}
			return cfg, fmt.Errorf("invalid config %s:\n%w", path, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		if data == nil {
			return cfg, fmt.Errorf("invalid settings (no config file, %s absent):\n%w", path, err)
		}
		return cfg, fmt.Errorf("invalid config %s:\n%w", path, err)
	}
	// In controller mode the desired state comes from the controller (or
	// the last good config it sent): the commands check it themselves.
	if needDesired && cfg.Controller.URL == "" {
		if why := cfg.NoDesiredState(); why != "" {
			if data == nil {
				why = "there is no config file"
			}
			return cfg, fmt.Errorf("no desired state in config %s: %s; roce-agent changes nothing without one", path, why)
		}
	}
	return cfg, nil
}

// controllerOwned are the desired-state keys the controller sends
// (v1.NodeConfig but node.name): with controller.url set, neither the file
// nor the environment may set them.
var controllerOwned = []string{"generation", "node.index", "link", "addressing", "rails", "qos"}

// controllerOwnedSet names every controller-owned key the file (doc) or a
// ROCE_AGENT_* variable sets, one problem a line.
func controllerOwnedSet(doc map[string]any) error {
	var errs []error
	for _, key := range controllerOwned {
		if lookupKey(doc, key) {
			errs = append(errs, fmt.Errorf("%s: set in the config file, but controller.url is set and the controller sends the desired state; remove it", key))
		}
	}
	var env []string
	for key := range agent.SettingKeys() {
		for _, owned := range controllerOwned {
			if key == owned || strings.HasPrefix(key, owned+".") {
				env = append(env, key)
			}
		}
	}
	slices.Sort(env)
	for _, key := range env {
		name := "ROCE_AGENT_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if os.Getenv(name) != "" {
			errs = append(errs, fmt.Errorf("%s: set by %s, but controller.url is set and the controller sends the desired state; unset it", key, name))
		}
	}
	return errors.Join(errs...)
}

// lookupKey reports whether a dotted key is in a parsed document (keys
// compare case-insensitively, as viper folds them).
func lookupKey(doc map[string]any, key string) bool {
	first, rest, nested := strings.Cut(key, ".")
	for k, v := range doc {
		if !strings.EqualFold(k, first) {
			continue
		}
		if !nested {
			return true
		}
		m, ok := v.(map[string]any)
		return ok && lookupKey(m, rest)
	}
	return false
}

// maxRails is how many rails a config may list: rail numbers are 0-255.
const maxRails = 256

// maxNodes bounds the YAML nodes of a config (a 256-rail config has a few
// thousand), and with them the work an alias-heavy document can cause.
const maxNodes = 100000

// parseDocument parses a YAML document into plain maps, lists and scalar
// strings for the key checks, in time linear in its size: it walks the
// parse tree itself (yaml.v3's map decoding checks duplicate keys in
// quadratic time), counts every node it visits, aliases included, and
// refuses a document of more than maxNodes. An empty or comments-only
// document gives nil.
func parseDocument(data []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, nil
	}
	top := root.Content[0]
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return nil, nil
	}
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the document is not a mapping of keys to values")
	}
	budget := maxNodes
	var conv func(n *yaml.Node, depth int) (any, error)
	conv = func(n *yaml.Node, depth int) (any, error) {
		budget--
		if budget < 0 {
			return nil, fmt.Errorf("more than %d YAML nodes (aliases counted as expanded)", maxNodes)
		}
		if depth > 32 {
			return nil, fmt.Errorf("nested more than 32 levels deep")
		}
		switch n.Kind {
		case yaml.AliasNode:
			return conv(n.Alias, depth+1)
		case yaml.MappingNode:
			m := make(map[string]any, len(n.Content)/2)
			seen := make(map[string]string, len(n.Content)/2)
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := n.Content[i].Value
				// Keys are case-insensitive (viper folds them): two that
				// differ only in case would silently merge.
				if first, dup := seen[strings.ToLower(key)]; dup {
					if first == key {
						return nil, fmt.Errorf("line %d: key %s appears twice in one mapping", n.Content[i].Line, v1.Clip(key))
					}
					return nil, fmt.Errorf("line %d: key %s repeats key %s (keys are case-insensitive)", n.Content[i].Line, v1.Clip(key), v1.Clip(first))
				}
				seen[strings.ToLower(key)] = key
				v, err := conv(n.Content[i+1], depth+1)
				if err != nil {
					return nil, err
				}
				m[key] = v
			}
			return m, nil
		case yaml.SequenceNode:
			l := make([]any, 0, len(n.Content))
			for _, c := range n.Content {
				v, err := conv(c, depth+1)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			}
			return l, nil
		}
		return n.Value, nil
	}
	doc, err := conv(top, 0)
	if err != nil {
		return nil, err
	}
	return doc.(map[string]any), nil
}

// commaList turns a string into a list where the key is a list, as env
// values arrive ("10.0.0.0/8,fc00::/16", "3,4"); each item is then
// decoded (strictly) as the list's element type.
func commaList(_ reflect.Type, to reflect.Type, data any) (any, error) {
	str, ok := data.(string)
	if !ok || to.Kind() != reflect.Slice {
		return data, nil
	}
	var out []string
	for _, item := range strings.Split(str, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out, nil
}

var durationType = reflect.TypeOf(time.Duration(0))

// strictScalars converts config values the way a careful reader expects and
// nothing more: integers only from integers (or integral floats and decimal
// strings, as env values arrive), in range; numbers from numbers or decimal
// strings, never inf or NaN; durations only from duration
// strings; booleans from booleans or "true"/"false" strings. 9000.5, true
// or a 20-digit number is an error, never a wrapped or truncated value.
func strictScalars(_ reflect.Type, to reflect.Type, data any) (any, error) {
	for to.Kind() == reflect.Pointer {
		to = to.Elem()
	}
	if to == durationType {
		switch d := data.(type) {
		case string:
			v, err := time.ParseDuration(strings.TrimSpace(d))
			if err != nil {
				return nil, fmt.Errorf("%s is not a duration (want e.g. 30s, 1m)", v1.Clip(d))
			}
			return v, nil
		case time.Duration:
			return d, nil
		default:
			return nil, fmt.Errorf("%s is not a duration (want a string such as 30s or 1m)", clipPlain(data))
		}
	}
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strictInt(data, to.Bits())
	case reflect.Float32, reflect.Float64:
		switch d := data.(type) {
		case float32, float64, int, int8, int16, int32, int64:
			f := reflect.ValueOf(d).Convert(reflect.TypeOf(float64(0))).Float()
			if math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("%v is not a number", f)
			}
			return f, nil
		case string:
			f, err := strconv.ParseFloat(strings.TrimSpace(d), 64)
			if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("%s is not a number", v1.Clip(d))
			}
			return f, nil
		default:
			return nil, fmt.Errorf("%s is not a number", clipPlain(data))
		}
	case reflect.Bool:
		switch d := data.(type) {
		case bool:
			return d, nil
		case string:
			b, err := strconv.ParseBool(strings.TrimSpace(d))
			if err != nil {
				return nil, fmt.Errorf("%s is not true or false", v1.Clip(d))
			}
			return b, nil
		default:
			return nil, fmt.Errorf("%s is not true or false", clipPlain(data))
		}
	}
	return data, nil
}

func strictInt(data any, bits int) (any, error) {
	lo, hi := int64(math.MinInt64)>>(64-bits), int64(math.MaxInt64)>>(64-bits)
	inRange := func(v int64) (any, error) {
		if v < lo || v > hi {
			return nil, fmt.Errorf("%d is out of range", v)
		}
		return v, nil
	}
	switch d := data.(type) {
	case int:
		return inRange(int64(d))
	case int8:
		return inRange(int64(d))
	case int16:
		return inRange(int64(d))
	case int32:
		return inRange(int64(d))
	case int64:
		return inRange(d)
	case uint, uint8, uint16, uint32, uint64:
		u := reflect.ValueOf(d).Uint()
		if u > uint64(hi) {
			return nil, fmt.Errorf("%d is out of range", u)
		}
		return int64(u), nil
	case float32, float64:
		f := reflect.ValueOf(d).Float()
		if f != math.Trunc(f) || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("%v is not an integer", f)
		}
		if f < float64(lo) || f > float64(hi) {
			return nil, fmt.Errorf("%v is out of range", f)
		}
		return int64(f), nil
	case string:
		v, err := strconv.ParseInt(strings.TrimSpace(d), 10, bits)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return nil, fmt.Errorf("%s is out of range", v1.Clip(d))
			}
			return nil, fmt.Errorf("%s is not an integer", v1.Clip(d))
		}
		return v, nil
	case bool:
		return nil, fmt.Errorf("%v is not an integer", d)
	}
	return data, nil
}

// clipPlain prints a non-string value for a message, cut to 64 bytes.
func clipPlain(v any) string {
	s := fmt.Sprint(v)
	if len(s) <= 64 {
		return s
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:64], len(s))
}

// clipLines cuts every line of an error message to 300 bytes, so that a
// hostile value is never echoed in full.
func clipLines(err error) error {
	const max = 280 // with the "... (N bytes)" suffix, at most 300
	msg := err.Error()
	lines := strings.Split(msg, "\n")
	cut := false
	for i, l := range lines {
		if len(l) > max {
			end := max
			for end > 0 && !utf8.RuneStart(l[end]) {
				end-- // never split a character
			}
			lines[i] = l[:end] + fmt.Sprintf("... (%d bytes)", len(l))
			cut = true
		}
	}
	if !cut {
		return err
	}
	return errors.New(strings.Join(lines, "\n"))
}
