package agent

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// UnknownKeys returns the keys of a decoded config document (as viper's
// AllSettings gives it) that Config does not have, in dotted form with list
// positions ("rails[0].ipv4"), sorted.
func UnknownKeys(doc map[string]any) []string {
	var out []string
	walkKeys(reflect.TypeOf(Config{}), doc, "", &out)
	sort.Strings(out)
	return out
}

func walkKeys(t reflect.Type, doc map[string]any, prefix string, out *[]string) {
	fields := map[string]reflect.Type{}
	keyFields(t, fields)
	for key, val := range doc {
		name := prefix + key
		ft, ok := fields[strings.ToLower(key)]
		if !ok {
			*out = append(*out, name)
			continue
		}
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			if m, ok := val.(map[string]any); ok {
				walkKeys(ft, m, name+".", out)
			}
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			if list, ok := val.([]any); ok {
				for i, item := range list {
					if m, ok := item.(map[string]any); ok {
						walkKeys(ft.Elem(), m, fmt.Sprintf("%s[%d].", name, i), out)
					}
				}
			}
		}
	}
}

// keyFields collects the keys of struct t and their types, those of
// squashed embedded structs (v1.NodeConfig in Config) at the same level.
func keyFields(t reflect.Type, fields map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if squashed(f) {
			keyFields(f.Type, fields)
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = f.Type
	}
}

// squashed reports an embedded struct whose fields mapstructure decodes at
// the level of its parent (`mapstructure:",squash"`).
func squashed(f reflect.StructField) bool {
	name, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	return f.Anonymous && f.Type.Kind() == reflect.Struct && name == "" && slices.Contains(strings.Split(opts, ","), "squash")
}

// SettingKeys lists every key of Config that holds a scalar or a list of
// scalars ("link.mtu", "node.index", "link.routes"), with its default
// value (nil when the default is unset). Commands register them so that
// every one can also come from ROCE_AGENT_* environment variables.
func SettingKeys() map[string]any {
	out := map[string]any{}
	flattenKeys(reflect.ValueOf(DefaultConfig()), "", out)
	return out
}

func flattenKeys(v reflect.Value, prefix string, out map[string]any) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if squashed(f) {
			flattenKeys(v.Field(i), prefix, out)
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		fv := v.Field(i)
		key := prefix + tag
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct:
			flattenKeys(fv, key+".", out)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct, ft.Kind() == reflect.Map:
			// lists of objects (rails) and maps (dscp_to_priority) come
			// from the file only
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
		case ft.Kind() == reflect.Pointer, ft.Kind() == reflect.Slice:
			if fv.IsNil() {
				out[key] = nil
			} else {
				out[key] = fv.Interface()
			}
		default:
			out[key] = fv.Interface()
		}
	}
}
