// Package ui is evalflow's results page, served at /ui/ by the start function: runs
// with live progress, a run's timeline, scores and samples, and runs compared. It is
// static files embedded in the binary, Chart.js among them (hack/vendor-ui.sh), so it
// loads nothing from the network; it reads the runs API with the caller's login
// cookie (Cookie).
package ui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
)

// Cookie is the login cookie's name: the caller's token, set by /ui/?token=TOKEN.
const Cookie = "evalflow_token"

//go:embed static
var files embed.FS

// Handler serves the page under /ui/: /ui/static/FILE are its files, every other path
// the page itself, which routes by its path (/ui/, /ui/runs/ID, /ui/compare).
func Handler() http.Handler {
	static, _ := fs.Sub(files, "static")
	assets := http.StripPrefix("/ui/static/", http.FileServerFS(static))
	index, _ := fs.ReadFile(static, "index.html")
	etags := contentTags(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if name, ok := strings.CutPrefix(r.URL.Path, "/ui/static/"); ok {
			// Revalidated each time, answered 304 while unchanged (and the browser
			// keeps its compiled scripts).
			w.Header().Set("Cache-Control", "no-cache")
			if tag, ok := etags[name]; ok {
				w.Header().Set("ETag", tag)
			}
			assets.ServeHTTP(w, r)
			return
		}
		if path.Ext(r.URL.Path) != "" { // not a page's path: a file that is not there
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(index)
	})
}

// contentTags are the ETags of the page's files: their content's digests.
func contentTags(static fs.FS) map[string]string {
	tags := map[string]string{}
	_ = fs.WalkDir(static, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(static, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		tags[name] = `"` + hex.EncodeToString(sum[:12]) + `"`
		return nil
	})
	return tags
}

// Login is the response to /ui/?token=TOKEN once the token is known good: the token
// goes into an HttpOnly, same-site cookie, and the browser is sent on to the same
// page without it in its address (nor in its history).
func Login(w http.ResponseWriter, r *http.Request, token string) {
	http.SetCookie(w, &http.Cookie{Name: Cookie, Value: token, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: 30 * 24 * 3600})
	u := *r.URL
	q := u.Query()
	next := q.Get("next") // the login form's: the page that asked for it
	q.Del("token")
	q.Del("next")
	u.RawQuery = q.Encode()
	to := u.RequestURI()
	if pageUnderUI(next) {
		to = next
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// pageUnderUI reports whether next (a login's next=) names a page of the results page
// alone: a path under /ui/ on this host, with no ".." (nor an encoded one) to climb out
// of it, nor a backslash or line break a browser could read otherwise.
func pageUnderUI(next string) bool {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || strings.ContainsAny(next, "\\\r\n") {
		return false
	}
	clean := path.Clean(u.Path)
	if strings.HasSuffix(u.Path, "/") && clean != "/" {
		clean += "/"
	}
	return clean == u.Path && strings.HasPrefix(u.Path, "/ui/") && !strings.Contains(u.EscapedPath(), "%")
}
