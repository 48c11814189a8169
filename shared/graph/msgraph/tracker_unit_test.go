package msgraph

import (
	"errors"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
)

func TestDecodeDeltaPage(t *testing.T) {
	body := `{"@odata.context":"x","@odata.deltaLink":"https://g/v1.0/users/delta?$deltatoken=t","value":[
	  {"id":"full","userPrincipalName":"a@x","mail":null,"onPremisesImmutableId":"imm","onPremisesSyncEnabled":true,
	   "passwordPolicies":"DisablePasswordExpiration","lastPasswordChangeDateTime":"2025-01-02T03:04:05Z",
	   "accountEnabled":false,"preferredLanguage":"de-DE"},
	  {"id":"part","passwordPolicies":"None"},
	  {"id":"gone","@removed":{"reason":"changed"}}]}`
	p, err := decodeDeltaPage([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if p.DeltaLink == "" || p.NextLink != "" || len(p.Users) != 3 {
		t.Fatalf("page: %+v", p)
	}
	want := graph.DeltaUser{User: graph.User{ID: "full", UPN: "a@x", ImmutableID: "imm", SyncEnabled: true,
		PasswordPolicies: "DisablePasswordExpiration", LastPasswordChange: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		PreferredLanguage: "de-DE"}}
	if !reflect.DeepEqual(p.Users[0], want) {
		t.Errorf("full item (null mail is a value, not absent):\n got %+v\nwant %+v", p.Users[0], want)
	}
	if u := p.Users[1]; len(u.Absent) != len(graph.DeltaSelect)-2 || slices.Contains(u.Absent, "passwordPolicies") || u.PasswordPolicies != "None" || u.Removed {
		t.Errorf("partial item: %+v", u)
	}
	if u := p.Users[2]; !u.Removed || u.ID != "gone" || len(u.Absent) != 0 {
		t.Errorf("removed item: %+v", u)
	}
}

func TestDecodeDeltaPageErrors(t *testing.T) {
	for name, body := range map[string]string{
		"not json":   `<html>`,
		"no link":    `{"value":[]}`,
		"both links": `{"value":[],"@odata.nextLink":"a","@odata.deltaLink":"b"}`,
		"no id":      `{"value":[{"mail":"x"}],"@odata.deltaLink":"b"}`,
		"wrong type": `{"value":[{"id":"x","accountEnabled":"yes"}],"@odata.deltaLink":"b"}`,
		"wrong time": `{"value":[{"id":"x","lastPasswordChangeDateTime":"yesterday"}],"@odata.deltaLink":"b"}`,
	} {
		_, err := decodeDeltaPage([]byte(body))
		var ge *graph.Error
		if !errors.As(err, &ge) || ge.Status != http.StatusOK || ge.Retryable() {
			t.Errorf("%s: want a non-retryable *graph.Error, got %v", name, err)
		}
	}
}

func TestIsSyncStateNotFound(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&graph.Error{Status: 410}, true},
		{&graph.Error{Status: 400, Code: "syncStateNotFound"}, true},
		{&graph.Error{Status: 400, Code: "resyncRequired"}, true},
		{&graph.Error{Status: 400, Code: "Request_BadRequest"}, false},
		{&graph.Error{Status: 429}, false},
		{errors.New("other"), false},
	} {
		if got := graph.IsSyncStateNotFound(tc.err); got != tc.want {
			t.Errorf("IsSyncStateNotFound(%v) = %v", tc.err, got)
		}
	}
}
