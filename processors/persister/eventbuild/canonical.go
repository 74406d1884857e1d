package eventbuild

import (
	"bytes"
	"fmt"
	"slices"
	"unicode/utf8"
)

// maxSafeInteger bounds the integers canonical JSON carries (room versions 6 and
// later): ±(2^53−1), the integers an IEEE double holds exactly.
const maxSafeInteger = 1<<53 - 1

// maxDepth is the deepest nesting of objects and arrays content may have, the content
// object counting as one: gomatrixserverlib reads the whole event with encoding/json,
// whose scanner stops at 10,000 levels, and the event object is one of them.
const maxDepth = 9999

// A span is a byte range [start, end) of the parser's arena.
type span struct{ start, end int32 }

// A node is one value of the content: a scalar, whose canonical text is val in the
// arena, or an object or array, whose elements are the chain starting at child and
// linked by next (an object's in canonical key order). key is the decoded key of an
// object member; a key never needs escaping (see parser.str), so it is also its
// canonical text without the quotes.
type node struct {
	key   span
	val   span
	child int32
	next  int32
	kind  byte
}

const (
	scalar byte = iota
	object
	array
)

// none ends a chain of nodes.
const none = -1

// parser turns client JSON into canonical JSON: it checks the input strictly, writes
// each scalar's canonical text to the arena, and links the values into a tree whose
// objects are sorted; write then emits the canonical text in one pass. Sorting
// indices instead of moving text keeps the work linear however deep objects nest.
// A parser is scratch space, reused across builds.
type parser struct {
	in    []byte
	i     int
	arena []byte
	nodes []node
	order []int32
}

// fail makes the error for content that is not JSON the canonical form can carry.
func (p *parser) fail(format string, args ...any) error {
	return fmt.Errorf("%w: content at byte %d: %s", ErrBadJSON, p.i, fmt.Sprintf(format, args...))
}

// parseObject parses in, which must hold one JSON object and nothing else but
// whitespace, and returns the root node's index.
func (p *parser) parseObject(in []byte) (int32, error) {
	p.in, p.i = in, 0
	p.arena, p.nodes = p.arena[:0], p.nodes[:0]
	p.space()
	if p.i >= len(p.in) || p.in[p.i] != '{' {
		return none, p.fail("not a JSON object")
	}
	root, err := p.value(1)
	if err != nil {
		return none, err
	}
	if p.space(); p.i != len(p.in) {
		return none, p.fail("data after the object")
	}
	return root, nil
}

func (p *parser) space() {
	for p.i < len(p.in) {
		switch p.in[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) add(n node) int32 {
	p.nodes = append(p.nodes, n)
	return int32(len(p.nodes) - 1)
}

// value parses the value at p.i, at nesting depth (containers count).
func (p *parser) value(depth int) (int32, error) {
	if p.i >= len(p.in) {
		return none, p.fail("unexpected end")
	}
	start := int32(len(p.arena))
	switch c := p.in[p.i]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		if err := p.str(false); err != nil {
			return none, err
		}
	case c == '-' || c >= '0' && c <= '9':
		if err := p.number(); err != nil {
			return none, err
		}
	case c == 't':
		if err := p.literal("true"); err != nil {
			return none, err
		}
	case c == 'f':
		if err := p.literal("false"); err != nil {
			return none, err
		}
	case c == 'n':
		if err := p.literal("null"); err != nil {
			return none, err
		}
	default:
		return none, p.fail("unexpected %q", c)
	}
	return p.add(node{val: span{start, int32(len(p.arena))}, child: none, next: none, kind: scalar}), nil
}

func (p *parser) literal(word string) error {
	if end := p.i + len(word); end > len(p.in) || string(p.in[p.i:end]) != word {
		return p.fail("invalid literal")
	}
	p.arena = append(p.arena, word...)
	p.i += len(word)
	return nil
}

// number accepts what canonical JSON allows: integers within ±(2^53−1), without
// fraction, exponent or a minus on zero. gomatrixserverlib lets some of the rest
// through (0.0, -0.0, 1E2) and Synapse refuses them; so do we.
func (p *parser) number() error {
	start := p.i
	neg := p.in[p.i] == '-'
	if neg {
		p.i++
	}
	digits := p.i
	for p.i < len(p.in) && p.in[p.i] >= '0' && p.in[p.i] <= '9' {
		p.i++
	}
	n := p.i - digits
	switch {
	case n == 0:
		return p.fail("invalid number")
	case n > 1 && p.in[digits] == '0':
		return p.fail("number with a leading zero")
	}
	if p.i < len(p.in) {
		switch p.in[p.i] {
		case '.', 'e', 'E':
			return p.fail("not an integer (canonical JSON has no fractions or exponents)")
		}
	}
	if neg && n == 1 && p.in[digits] == '0' {
		return p.fail("-0 (canonical JSON writes 0)")
	}
	if n > 16 {
		return p.fail("integer out of the range ±(2^53−1)")
	}
	var v uint64
	for _, d := range p.in[digits:p.i] {
		v = v*10 + uint64(d-'0')
	}
	if v > maxSafeInteger {
		return p.fail("integer out of the range ±(2^53−1)")
	}
	p.arena = append(p.arena, p.in[start:p.i]...)
	return nil
}

func (p *parser) array(depth int) (int32, error) {
	if depth > maxDepth {
		return none, p.fail("nested deeper than %d", maxDepth)
	}
	p.i++ // [
	self := p.add(node{child: none, next: none, kind: array})
	p.space()
	if p.i < len(p.in) && p.in[p.i] == ']' {
		p.i++
		return self, nil
	}
	last := int32(none)
	for {
		p.space()
		v, err := p.value(depth + 1)
		if err != nil {
			return none, err
		}
		if last == none {
			p.nodes[self].child = v
		} else {
			p.nodes[last].next = v
		}
		last = v
		p.space()
		if p.i >= len(p.in) {
			return none, p.fail("unterminated array")
		}
		switch p.in[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return self, nil
		default:
			return none, p.fail("expected , or ] in array")
		}
	}
}

func (p *parser) object(depth int) (int32, error) {
	if depth > maxDepth {
		return none, p.fail("nested deeper than %d", maxDepth)
	}
	p.i++ // {
	self := p.add(node{child: none, next: none, kind: object})
	p.space()
	if p.i < len(p.in) && p.in[p.i] == '}' {
		p.i++
		return self, nil
	}
	last := int32(none)
	sorted := true
	for {
		p.space()
		if p.i >= len(p.in) || p.in[p.i] != '"' {
			return none, p.fail("expected a key")
		}
		keyStart := int32(len(p.arena))
		if err := p.str(true); err != nil {
			return none, err
		}
		key := span{keyStart, int32(len(p.arena))}
		p.space()
		if p.i >= len(p.in) || p.in[p.i] != ':' {
			return none, p.fail("expected : after a key")
		}
		p.i++
		p.space()
		v, err := p.value(depth + 1)
		if err != nil {
			return none, err
		}
		p.nodes[v].key = key
		if last == none {
			p.nodes[self].child = v
		} else {
			p.nodes[last].next = v
			if sorted && p.compareKeys(last, v) >= 0 {
				sorted = false
			}
		}
		last = v
		p.space()
		if p.i >= len(p.in) {
			return none, p.fail("unterminated object")
		}
		switch p.in[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			if !sorted {
				if err := p.sortMembers(self); err != nil {
					return none, err
				}
			}
			return self, nil
		default:
			return none, p.fail("expected , or } in object")
		}
	}
}

func (p *parser) key(n int32) []byte {
	k := p.nodes[n].key
	return p.arena[k.start:k.end]
}

// compareKeys orders keys by their UTF-8 bytes, which is code point order.
func (p *parser) compareKeys(a, b int32) int { return bytes.Compare(p.key(a), p.key(b)) }

// sortMembers relinks an object's members in key order and refuses duplicate keys
// (the spec and Synapse refuse them; gomatrixserverlib writes both, in either order).
// Nested objects are sorted already, so p.order is free.
func (p *parser) sortMembers(obj int32) error {
	p.order = p.order[:0]
	for m := p.nodes[obj].child; m != none; m = p.nodes[m].next {
		p.order = append(p.order, m)
	}
	slices.SortFunc(p.order, p.compareKeys)
	for j, m := range p.order {
		next := int32(none)
		if j+1 < len(p.order) {
			next = p.order[j+1]
			if p.compareKeys(m, next) == 0 {
				return p.fail("duplicate key %q", p.key(m))
			}
		}
		p.nodes[m].next = next
	}
	p.nodes[obj].child = p.order[0]
	return nil
}

// safeInString marks the ASCII bytes a string copies as they are.
var safeInString = func() (t [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str parses the string at p.i and appends its canonical text to the arena: quoted for
// a value, bare for a key. The canonical text of a string keeps every character as
// UTF-8 except " and \ (written \" and \\) and the control characters (\b \t \n \f \r,
// the others \u00xx); \/ and the other \u escapes are decoded.
//
// Keys must need no escaping: gomatrixserverlib writes the decoded key into its output
// unescaped, so a key holding " or \ or a control character gives broken JSON there.
// Strings must be valid UTF-8 and escaped surrogates must pair: gomatrixserverlib copies
// invalid UTF-8 into the event (and turns it into U+FFFD in the redacted copy it signs)
// and drops or mangles lone surrogates; the spec wants UTF-8 and Synapse refuses both.
func (p *parser) str(key bool) error {
	p.i++ // "
	if !key {
		p.arena = append(p.arena, '"')
	}
	in := p.in
	for {
		start := p.i
		for p.i < len(in) && in[p.i] < utf8.RuneSelf && safeInString[in[p.i]] {
			p.i++
		}
		p.arena = append(p.arena, in[start:p.i]...)
		if p.i >= len(in) {
			return p.fail("unterminated string")
		}
		switch c := in[p.i]; {
		case c == '"':
			p.i++
			if !key {
				p.arena = append(p.arena, '"')
			}
			return nil
		case c == '\\':
			if err := p.escape(key); err != nil {
				return err
			}
		case c < ' ':
			return p.fail("control character in a string")
		default:
			r, size := utf8.DecodeRune(in[p.i:])
			if r == utf8.RuneError && size == 1 {
				return p.fail("invalid UTF-8")
			}
			p.arena = append(p.arena, in[p.i:p.i+size]...)
			p.i += size
		}
	}
}

// escape decodes the escape sequence at p.i (a backslash) into the arena.
func (p *parser) escape(key bool) error {
	if p.i+1 >= len(p.in) {
		return p.fail("unterminated string")
	}
	c := p.in[p.i+1]
	switch c {
	case '/':
		p.i += 2
		p.arena = append(p.arena, '/')
		return nil
	case '"', '\\', 'b', 'f', 'n', 'r', 't':
		if key {
			return p.fail("key needs escaping")
		}
		p.i += 2
		p.arena = append(p.arena, '\\', c)
		return nil
	case 'u':
	default:
		return p.fail("invalid escape")
	}
	p.i += 2
	r, err := p.hex4()
	if err != nil {
		return err
	}
	switch {
	case r < ' ' || r == '"' || r == '\\':
		if key {
			return p.fail("key needs escaping")
		}
		p.arena = appendEscaped(p.arena, byte(r))
		return nil
	case r >= 0xDC00 && r <= 0xDFFF:
		return p.fail("lone UTF-16 surrogate")
	case r >= 0xD800 && r <= 0xDBFF:
		if p.i+1 >= len(p.in) || p.in[p.i] != '\\' || p.in[p.i+1] != 'u' {
			return p.fail("lone UTF-16 surrogate")
		}
		p.i += 2
		low, err := p.hex4()
		if err != nil {
			return err
		}
		if low < 0xDC00 || low > 0xDFFF {
			return p.fail("lone UTF-16 surrogate")
		}
		r = 0x10000 + (r-0xD800)<<10 + (low - 0xDC00)
	}
	p.arena = utf8.AppendRune(p.arena, r)
	return nil
}

// hex4 reads the four hex digits of a \u escape.
func (p *parser) hex4() (rune, error) {
	if p.i+4 > len(p.in) {
		return 0, p.fail("invalid \\u escape")
	}
	var r rune
	for _, c := range p.in[p.i : p.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, p.fail("invalid \\u escape")
		}
	}
	p.i += 4
	return r, nil
}

const hexDigits = "0123456789abcdef"

// appendEscaped appends the canonical escape of c, which is " or \ or a control
// character.
func appendEscaped(dst []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(dst, '\\', c)
	case '\b':
		return append(dst, '\\', 'b')
	case '\t':
		return append(dst, '\\', 't')
	case '\n':
		return append(dst, '\\', 'n')
	case '\f':
		return append(dst, '\\', 'f')
	case '\r':
		return append(dst, '\\', 'r')
	}
	return append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
}

// appendString appends s as a canonical JSON string the way gomatrixserverlib ends up
// writing the event's own string fields: encoding/json turns each byte that is not
// UTF-8 into U+FFFD (and escapes HTML characters and U+2028/9, which the canonical
// pass decodes again).
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			if !safeInString[c] {
				dst = append(dst, s[start:i-1]...)
				dst = appendEscaped(dst, c)
				start = i
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\uFFFD"...)
			start = i + 1
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// write appends the canonical text of node n.
func (p *parser) write(dst []byte, n int32) []byte {
	nd := &p.nodes[n]
	switch nd.kind {
	case scalar:
		return append(dst, p.arena[nd.val.start:nd.val.end]...)
	case array:
		dst = append(dst, '[')
		for c := nd.child; c != none; c = p.nodes[c].next {
			if c != nd.child {
				dst = append(dst, ',')
			}
			dst = p.write(dst, c)
		}
		return append(dst, ']')
	}
	dst = append(dst, '{')
	for c := nd.child; c != none; c = p.nodes[c].next {
		if c != nd.child {
			dst = append(dst, ',')
		}
		dst = p.writeMember(dst, c)
	}
	return append(dst, '}')
}

// writeMember appends object member n as "key":value.
func (p *parser) writeMember(dst []byte, n int32) []byte {
	dst = append(dst, '"')
	dst = append(dst, p.key(n)...)
	dst = append(dst, '"', ':')
	return p.write(dst, n)
}
