package suggest

import "testing"

func TestDidYouMean(t *testing.T) {
	known := []string{"full", "streamingllm", "h2o", "tova", "nats"}
	if got := DidYouMean("nast", known); got != ` (did you mean "nats"?)` {
		t.Errorf("nast: %q", got)
	}
	if got := DidYouMean("completely-different", known); got != "" {
		t.Errorf("far name got a hint: %q", got)
	}
	if Distance("kitten", "sitting") != 3 {
		t.Error("Distance(kitten, sitting) != 3")
	}
}
