package pgdriver

import "testing"

func TestFirstSchema(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                 "",
		"t_abc":            "t_abc",
		" Mixed , public":  "mixed",
		`"Quoted""x", pub`: `Quoted"x`,
		`"$user", public`:  "",
		"$user, public":    "",
	} {
		if got := firstSchema(in); got != want {
			t.Errorf("firstSchema(%q) = %q, want %q", in, got, want)
		}
	}
}
