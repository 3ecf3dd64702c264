package cloudevent

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"

	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
)

// Sign sets e's signature (evalflow.ExtSignature): an HMAC-SHA256 with key over its
// type, subject, id and data, so that whoever lacks key can neither forge a report nor
// move one to another run. Set the data before signing.
func Sign(e *event.Event, key []byte) {
	e.SetExtension(evalflow.ExtSignature, signature(*e, key))
}

// Verify is whether e carries a signature made with key over what it says.
func Verify(e event.Event, key []byte) bool {
	got, _ := e.Extensions()[evalflow.ExtSignature].(string)
	return got != "" && hmac.Equal([]byte(got), []byte(signature(e, key)))
}

func signature(e event.Event, key []byte) string {
	m := hmac.New(sha256.New, key)
	for _, part := range []string{e.Type(), e.Subject(), e.ID()} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	m.Write(e.Data())
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
