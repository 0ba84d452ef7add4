package devhost

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// lastWins returns event as the host passes it on when one of its objects has a key twice.
// The Event Grid extension reads the webhook body with JToken.Parse (HttpRequestProcessor.cs in
// Microsoft.Azure.WebJobs.Extensions.EventGrid) and default JsonLoadSettings, whose
// DuplicatePropertyNameHandling is Replace: Json.NET's JContainer.ReadProperty replaces the
// first property by the later one, in the first one's place, comparing names ordinally. The
// handler then gets the re-serialised object, with each key once and its last value. An event
// without a duplicate key is returned as it is.
func lastWins(event json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(event))
	dec.UseNumber()
	v, dup, err := readMerged(dec)
	if err != nil || !dup {
		return event, err
	}
	return marshalHost(v)
}

// orderedObject is a JSON object that keeps its keys in order.
type orderedObject struct {
	keys []string
	vals map[string]any
}

// MarshalJSON writes the keys in order, without HTML escaping (as marshalHost).
func (o *orderedObject) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, err := marshalHost(k)
		if err != nil {
			return nil, err
		}
		vb, err := marshalHost(o.vals[k])
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// readMerged reads one JSON value, merging duplicate keys as Json.NET does; dup reports
// whether any object had one.
func readMerged(dec *json.Decoder) (v any, dup bool, err error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, false, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, false, nil // string, json.Number, bool or nil
	}
	switch d {
	case '{':
		o := &orderedObject{vals: map[string]any{}}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, false, err
			}
			k, ok := kt.(string)
			if !ok {
				return nil, false, fmt.Errorf("object key %v is not a string", kt)
			}
			val, d2, err := readMerged(dec)
			if err != nil {
				return nil, false, err
			}
			dup = dup || d2
			if _, seen := o.vals[k]; seen {
				dup = true
			} else {
				o.keys = append(o.keys, k)
			}
			o.vals[k] = val
		}
		_, err = dec.Token() // '}'
		return o, dup, err
	case '[':
		items := []any{}
		for dec.More() {
			val, d2, err := readMerged(dec)
			if err != nil {
				return nil, false, err
			}
			dup = dup || d2
			items = append(items, val)
		}
		_, err = dec.Token() // ']'
		return items, dup, err
	}
	return nil, false, fmt.Errorf("unexpected %v", d)
}
