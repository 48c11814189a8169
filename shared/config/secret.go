package config

import (
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Secret is a credential. In YAML it is written as `env:NAME` (read from an
// environment variable), `file:/path` (read from a file, trailing newline
// trimmed) or a literal value. It never prints its value.
type Secret struct {
	ref   string // env:NAME / file:PATH / "literal"
	value string
}

// NewSecret returns a literal secret (tests, flags).
func NewSecret(v string) Secret { return Secret{ref: "literal", value: v} }

// Value is the secret itself. Only hand it to the library that needs it.
func (s Secret) Value() string { return s.value }

// IsSet reports whether a value or a reference was given.
func (s Secret) IsSet() bool { return s.ref != "" }

// String never reveals the value.
func (s Secret) String() string {
	if s.ref == "" {
		return ""
	}
	if s.ref == "literal" {
		return "[redacted]"
	}
	return s.ref
}

// MarshalYAML and MarshalJSON keep the value out of dumps.
func (s Secret) MarshalYAML() (any, error)    { return s.String(), nil }
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(fmt.Sprintf("%q", s.String())), nil }

// UnmarshalYAML takes the reference; resolve reads it.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a string (a value, env:NAME or file:PATH)")
	}
	switch v := n.Value; {
	case strings.HasPrefix(v, "env:"), strings.HasPrefix(v, "file:"):
		s.ref = v
	case v == "":
		*s = Secret{}
	default:
		s.ref, s.value = "literal", v
	}
	return nil
}

func (s *Secret) resolve(getenv func(string) string) error {
	switch {
	case strings.HasPrefix(s.ref, "env:"):
		name := strings.TrimPrefix(s.ref, "env:")
		s.value = getenv(name)
		if s.value == "" {
			return fmt.Errorf("environment variable %s is empty or unset", name)
		}
	case strings.HasPrefix(s.ref, "file:"):
		path := strings.TrimPrefix(s.ref, "file:")
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading secret file: %w", err)
		}
		s.value = strings.TrimRight(string(b), "\r\n")
		if s.value == "" {
			return fmt.Errorf("secret file %s is empty", path)
		}
	}
	return nil
}
