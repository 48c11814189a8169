package webhook

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

func TestParseNotifications(t *testing.T) {
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"user_notification", `{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Users/u","clientState":"c"}]}`, true},
		{"lifecycle_notification", `{"value":[{"subscriptionId":"s","lifecycleEvent":"missed"}]}`, true},
		{"unknown_fields_are_tolerated", `{"value":[{"subscriptionId":"s","changeType":"deleted","resource":"Users/u","newField":{"a":1}}],"extra":true}`, true},
		{"sequence_number_as_string", `{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Users/u","resourceData":{"sequenceNumber":"12"}}]}`, true},
		{"trailing_whitespace", `{"value":[{"subscriptionId":"s","lifecycleEvent":"missed"}]}` + "\n\t ", true},

		{"empty_body", ``, false},
		{"not_json", `value=1`, false},
		{"top_level_array", `[{"subscriptionId":"s","lifecycleEvent":"missed"}]`, false},
		{"top_level_null", `null`, false},
		{"trailing_garbage", `{"value":[{"subscriptionId":"s","lifecycleEvent":"missed"}]}x`, false},
		{"second_object", `{"value":[{"subscriptionId":"s","lifecycleEvent":"missed"}]}{}`, false},
		{"missing_value", `{}`, false},
		{"empty_value", `{"value":[]}`, false},
		{"null_value", `{"value":null}`, false},
		{"value_is_object", `{"value":{"subscriptionId":"s"}}`, false},
		{"null_notification", `{"value":[null]}`, false},
		{"missing_subscription_id", `{"value":[{"changeType":"updated","resource":"Users/u"}]}`, false},
		{"subscription_id_is_number", `{"value":[{"subscriptionId":5,"changeType":"updated","resource":"Users/u"}]}`, false},
		{"client_state_is_number", `{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Users/u","clientState":1}]}`, false},
		{"bad_expiration_time", `{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Users/u","subscriptionExpirationDateTime":"tomorrow"}]}`, false},
		{"unknown_change_type", `{"value":[{"subscriptionId":"s","changeType":"renamed","resource":"Users/u"}]}`, false},
		{"missing_change_type", `{"value":[{"subscriptionId":"s","resource":"Users/u"}]}`, false},
		{"missing_resource", `{"value":[{"subscriptionId":"s","changeType":"updated"}]}`, false},
		{"resource_data_is_string", `{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Users/u","resourceData":"x"}]}`, false},
		{"sequence_number_is_object", `{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Users/u","resourceData":{"sequenceNumber":{}}}]}`, false},
		{"lifecycle_event_not_a_word", `{"value":[{"subscriptionId":"s","lifecycleEvent":"<script>"}]}`, false},
		{"one_bad_notification_refuses_all", `{"value":[{"subscriptionId":"s","lifecycleEvent":"missed"},{"changeType":"updated"}]}`, false},
		{"validation_tokens_wrong_type", `{"value":[{"subscriptionId":"s","lifecycleEvent":"missed"}],"validationTokens":"x"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, err := ParseNotifications([]byte(tt.body))
			switch {
			case tt.ok && err != nil:
				t.Fatalf("ParseNotifications: %v", err)
			case !tt.ok && err == nil:
				t.Fatalf("ParseNotifications accepted %s as %+v", tt.body, ns)
			case !tt.ok && !errors.Is(err, ErrMalformed):
				t.Fatalf("error %v is not ErrMalformed", err)
			}
		})
	}
}

func TestDocSamplesParse(t *testing.T) {
	for name, body := range docSamples(t) {
		ns, err := ParseNotifications(body)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ns[0].ClientState != "secretClientValue" {
			t.Errorf("%s: clientState = %q", name, ns[0].ClientState)
		}
	}
}

func TestUserID(t *testing.T) {
	tests := []struct {
		name string
		n    events.GraphNotification
		want string
	}{
		{"graph_resource", events.GraphNotification{Resource: "Users/abc"}, "abc"},
		{"subscription_form", events.GraphNotification{Resource: "/users/abc"}, "abc"},
		{"resource_data_of_a_user", events.GraphNotification{Resource: "x", ResourceData: &events.GraphResourceData{ODataType: "#Microsoft.Graph.User", ID: "abc"}}, "abc"},
		{"message_below_a_user", events.GraphNotification{Resource: "Users/abc/messages/m1", ResourceData: &events.GraphResourceData{ODataType: "#Microsoft.Graph.Message", ID: "m1"}}, ""},
		{"lifecycle", events.GraphNotification{LifecycleEvent: "missed"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.n.UserID(); got != tt.want {
				t.Errorf("UserID() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEventID(t *testing.T) {
	at := time.Date(2025, 3, 3, 9, 0, 10, 0, time.UTC)
	n := events.GraphNotification{SubscriptionID: "sub-1", ChangeType: "updated", Resource: "Users/u-1"}
	data := []byte(`{"subscriptionId":"sub-1","changeType":"updated","resource":"Users/u-1"}`)
	id := EventID(n, data, at, time.Minute)

	t.Run("readable_and_key_safe", func(t *testing.T) {
		if !strings.HasPrefix(id, "graph.sub-1.updated.u-1.") || id != events.KeySafe(id) {
			t.Errorf("id = %q", id)
		}
	})
	t.Run("redelivery_within_the_window_collapses", func(t *testing.T) {
		if got := EventID(n, data, at.Add(40*time.Second), time.Minute); got != id {
			t.Errorf("redelivery got %q, want %q", got, id)
		}
	})
	t.Run("same_content_in_a_later_window_is_a_new_change", func(t *testing.T) {
		if got := EventID(n, data, at.Add(2*time.Minute), time.Minute); got == id {
			t.Errorf("a later identical notification collapsed into %q", got)
		}
	})
	t.Run("marked_notification_ignores_arrival_time", func(t *testing.T) {
		m := n
		m.ResourceData = &events.GraphResourceData{SequenceNumber: json.RawMessage(`7`)}
		md := []byte(`{"resourceData":{"sequenceNumber":7}}`)
		if EventID(m, md, at, time.Minute) != EventID(m, md, at.Add(time.Hour), time.Minute) {
			t.Error("a notification with a sequence number changed ID with arrival time")
		}
	})
	t.Run("different_content_differs", func(t *testing.T) {
		if got := EventID(n, append(data, ' '), at, time.Minute); got == id {
			t.Error("different content gave the same ID")
		}
	})
	t.Run("long_parts_are_cut", func(t *testing.T) {
		long := n
		long.SubscriptionID = strings.Repeat("s", 500)
		if got := EventID(long, data, at, time.Minute); len(got) > 200 {
			t.Errorf("id is %d bytes", len(got))
		}
	})
}

// docSamples are the payloads of Microsoft's docs (testdata/*.json).
func docSamples(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no doc samples: %v", err)
	}
	out := make(map[string][]byte, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

func FuzzParseNotifications(f *testing.F) {
	for _, b := range docSamples(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Users/u","resourceData":{"sequenceNumber":"1","eventTime":"2022-05-24T22:24:31Z"}}]}`))
	f.Add([]byte(`{"value":[{"subscriptionId":"s","lifecycleEvent":"missed"}]} x`))
	f.Add([]byte(`{"value":[]}`))
	f.Add([]byte(`{"value":[{"subscriptionId":5}]}`))
	f.Add([]byte(`[]`))

	at := time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		ns, err := ParseNotifications(body)
		if err != nil {
			if ns != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("refused with %v but returned %d notifications", err, len(ns))
			}
			return
		}
		if len(ns) == 0 {
			t.Fatal("accepted an empty collection")
		}
		for _, n := range ns {
			if n.SubscriptionID == "" || len(n.SubscriptionID) > maxSubscriptionID {
				t.Fatalf("accepted subscriptionId %q", n.SubscriptionID)
			}
			if !n.IsLifecycle() && (n.Resource == "" || (n.ChangeType != "created" && n.ChangeType != "updated" && n.ChangeType != "deleted")) {
				t.Fatalf("accepted change notification %+v", n)
			}
			// What ingest stores must never hold the secret and must parse again.
			n.ClientState = ""
			data, err := json.Marshal(n)
			if err != nil {
				t.Fatalf("re-encoding %+v: %v", n, err)
			}
			if strings.Contains(string(data), `"clientState"`) {
				t.Fatalf("stored form holds clientState: %s", data)
			}
			again, err := ParseNotifications([]byte(`{"value":[` + string(data) + `]}`))
			if err != nil || len(again) != 1 || again[0].SubscriptionID != n.SubscriptionID || again[0].UserID() != n.UserID() {
				t.Fatalf("stored form %s does not parse back: %v", data, err)
			}
			id := EventID(n, data, at, time.Minute)
			if id != EventID(n, data, at, time.Minute) || id != events.KeySafe(id) || len(id) > 256 {
				t.Fatalf("bad event id %q", id)
			}
		}
	})
}

func TestAppendEnvelopeMatchesJSONMarshal(t *testing.T) {
	data := []byte(`{"subscriptionId":"s","changeType":"updated","resource":"Users/u"}`)
	for _, at := range []time.Time{fixedClock(), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), time.Date(2026, 1, 2, 3, 4, 5, 120_000_000, time.UTC)} {
		env := events.Envelope{ID: "graph.s.updated.u.0123456789abcdef", Source: events.SourceGraph, Type: events.TypeGraphLifecycle, Time: at}
		got := appendEnvelope(nil, env, data)
		env.Data = data
		want, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("appendEnvelope = %s\njson.Marshal  = %s", got, want)
		}
	}
}
