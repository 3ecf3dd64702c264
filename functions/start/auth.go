package function

import (
	"context"
	"net/http"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/auth"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/ui"
)

// Config is start's own configuration: who may call it, and where results are read.
type Config struct {
	// TokensFile holds the callers' tokens (auth.Parse). Without it every request is
	// the operator's: for a function run alone in development, never a deployment
	// (evalflow up and make deploy always make one).
	TokensFile string `env:"EVALFLOW_TOKENS_FILE"`
	// OCI is where results artifacts are read back from, for the results API and page.
	OCI oci.Config
	// KeepResults is how many runs' results stay parsed in memory.
	KeepResults int `env:"EVALFLOW_KEEP_RESULTS, default=4"`
}

// caller is who sent a request: a caller by its token, or evalflow's broker
// delivering a CloudEvent (whose source then names the caller).
type caller struct {
	name     string
	delivery bool
}

// sees is whether c may see and act on run.
func (c caller) sees(run *evalflow.Run) bool { return c.name == auth.Operator || c.name == run.Caller }

type callerKey struct{}

func callerOf(ctx context.Context) caller { c, _ := ctx.Value(callerKey{}).(caller); return c }

var errUnauthenticated = &evalflow.Error{Code: evalflow.CodeUnauthenticated, Field: "Authorization",
	Message: "a caller's bearer token is required (Authorization: Bearer TOKEN)"}

// authenticated serves next to a request that carries a caller's token or, where
// delivery, the broker's; any other is 401 and reaches nothing.
func (f *Function) authenticated(delivery bool, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := f.identify(r, delivery)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="evalflow"`)
			f.writeError(w, "", errUnauthenticated)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	}
}

func (f *Function) identify(r *http.Request, delivery bool) (caller, bool) {
	if f.tokens == nil {
		return caller{name: auth.Operator}, true
	}
	token := auth.Bearer(r.Header.Get("Authorization"))
	if token == "" && !delivery { // the results page's login (ui.Login)
		if c, err := r.Cookie(ui.Cookie); err == nil {
			token = c.Value
		}
	}
	if name, err := f.tokens.Caller(token); err == nil {
		return caller{name: name}, true
	}
	// The broker's delivery (its token checked as every step checks it); where the
	// deployment names no way to tell one, none is taken.
	if !delivery || !f.ChecksDeliveries() {
		return caller{}, false
	}
	if err := f.Delivered(r); err != nil {
		f.Log.Warn("a request that is neither a caller's nor the broker's delivery refused", "remote", r.RemoteAddr, "err", err)
		return caller{}, false
	}
	return caller{delivery: true}, true
}

// page serves the results page (ui.Handler). /ui/?token=TOKEN logs in: a caller's
// token becomes the page's cookie; an unknown one is 401.
func (f *Function) page() http.HandlerFunc {
	h := ui.Handler()
	return func(w http.ResponseWriter, r *http.Request) {
		if token := r.URL.Query().Get("token"); token != "" {
			if f.tokens != nil {
				if _, err := f.tokens.Caller(token); err != nil {
					w.Header().Set("WWW-Authenticate", `Bearer realm="evalflow"`)
					http.Error(w, "this token is not a caller's: open the address evalflow up (or make deploy) printed", http.StatusUnauthorized)
					return
				}
			}
			ui.Login(w, r, token)
			return
		}
		h.ServeHTTP(w, r)
	}
}
