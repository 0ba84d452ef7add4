package handler

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// duplicateKey returns the first key that appears twice in one object of the JSON value raw,
// and where (a path such as data.registrationId); found is false when every object's keys are
// distinct. JSON leaves duplicate names to the reader (RFC 8259 §4), and readers disagree:
// Go's encoding/json and Json.NET keep the last value, others the first, so a filter in front
// of the app and the app could read two different events from the same bytes.
//
// raw must already be valid JSON (it is walked without recursion, so its depth costs no stack).
func duplicateKey(raw []byte) (key, path string, found bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var stack []*jsonFrame
	// valuePath names the value about to be read in the innermost container.
	valuePath := func() string {
		if len(stack) == 0 {
			return ""
		}
		f := stack[len(stack)-1]
		if f.object {
			return joinPath(f.path, f.key)
		}
		return f.path + "[" + strconv.Itoa(f.index) + "]"
	}
	for {
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].inKey {
			f := stack[n-1]
			tok, err := dec.Token()
			if err != nil {
				return "", "", false
			}
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				if !advance(stack) {
					return "", "", false
				}
				continue
			}
			k, ok := tok.(string)
			if !ok {
				return "", "", false
			}
			if f.keys[k] {
				return k, joinPath(f.path, k), true
			}
			f.keys[k] = true
			f.key, f.inKey = k, false
			continue
		}
		path := valuePath()
		tok, err := dec.Token()
		if err != nil { // io.EOF after the value, or invalid JSON (checked by the caller)
			return "", "", false
		}
		switch d := tok.(type) {
		case json.Delim:
			switch d {
			case '{':
				stack = append(stack, &jsonFrame{object: true, keys: map[string]bool{}, path: path, inKey: true})
			case '[':
				stack = append(stack, &jsonFrame{path: path})
			case ']':
				stack = stack[:len(stack)-1]
				if !advance(stack) {
					return "", "", false
				}
			}
		default:
			if !advance(stack) {
				return "", "", false
			}
		}
	}
}

// jsonFrame is one open object or array of the walk.
type jsonFrame struct {
	object bool
	keys   map[string]bool
	path   string
	index  int
	key    string // the object key whose value is being read
	inKey  bool   // the next token of an object is a key
}

// advance moves the innermost container past the value just read; false when the top-level
// value is complete.
func advance(stack []*jsonFrame) bool {
	if len(stack) == 0 {
		return false
	}
	f := stack[len(stack)-1]
	if f.object {
		f.inKey = true
	} else {
		f.index++
	}
	return true
}

func joinPath(parent, key string) string {
	k := key
	if !plainKey(key) {
		k = "[" + strconv.Quote(abbreviate(key, 40)) + "]"
		if parent == "" {
			return k
		}
		return parent + k
	}
	if parent == "" {
		return k
	}
	return parent + "." + k
}

func plainKey(k string) bool {
	if k == "" || len(k) > 40 {
		return false
	}
	for _, r := range k {
		if !isASCIIAlnum(r) && r != '_' && r != '-' && r != '$' {
			return false
		}
	}
	return true
}

// refuseDuplicateKeys is the rejection for a duplicate key found in what (e.g. "the event").
func refuseDuplicateKeys(what string, raw []byte) *Rejection {
	key, path, found := duplicateKey(raw)
	if !found {
		return nil
	}
	return reject("%s has the key %s twice (at %s); readers disagree on which one counts (the first or the last), so a filter in front of this app could have read another event: send each key once", what, quote(key), path)
}
