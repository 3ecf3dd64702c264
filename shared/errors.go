package evalflow

import (
	"errors"
	"fmt"
	"net/http"
)

// Code classifies an Error. Codes map to HTTP status in one table: HTTPStatus.
type Code string

const (
	CodeInvalid  Code = "invalid"   // the caller's input is wrong; never retry
	CodeNotFound Code = "not_found" // no such run
	CodeConflict Code = "conflict"  // the request contradicts stored state
	// CodeUnauthenticated: no valid token; nothing was read or changed.
	CodeUnauthenticated Code = "unauthenticated"
	CodeInternal        Code = "internal" // our fault or a dependency's; retry may help
)

// Error is evalflow's error: a code, the field at fault (if any), a message, and the
// cause it wraps.
type Error struct {
	Code    Code
	Field   string
	Message string
	Err     error
}

func (e *Error) Error() string {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes every CodeInvalid error ErrPermanent: bad input never becomes good by
// trying again.
func (e *Error) Is(target error) bool { return target == ErrPermanent && e.Code == CodeInvalid }

// ErrPermanent says that what failed can never succeed, however often it is tried: a
// bad request or job spec, a cluster or endpoint that refuses for good, results that
// were never written. Every adapter wraps such failures into it (%w), and a step
// fails the run on it (pipeline.Env.Settle); any other error is redelivered.
var ErrPermanent = errors.New("cannot succeed on a retry")

// Permanent marks err as ErrPermanent, its message unchanged (nil stays nil).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

func (p permanent) Is(target error) bool { return target == ErrPermanent }

// Invalidf returns a CodeInvalid error naming field.
func Invalidf(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrJobExists is a job runtime's answer to creating a job whose name exists: the
// create was a redelivery, and the job is left as it is.
var ErrJobExists = errors.New("job exists already")

// ErrNotFound is returned when a run does not exist.
var ErrNotFound = &Error{Code: CodeNotFound, Message: "run not found"}

// ErrorCode returns the code of err, CodeInternal when err is not an *Error.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

var httpStatus = map[Code]int{
	CodeInvalid:         http.StatusBadRequest,
	CodeNotFound:        http.StatusNotFound,
	CodeConflict:        http.StatusConflict,
	CodeUnauthenticated: http.StatusUnauthorized,
	CodeInternal:        http.StatusInternalServerError,
}

// HTTPStatus maps err to the HTTP status a handler answers with.
func HTTPStatus(err error) int { return httpStatus[ErrorCode(err)] }

// ErrorField returns the field err names, or "".
func ErrorField(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// Within is err with the field it names placed under prefix (a task file's field as
// the request names it: datasets[0].task_yaml.metric_list[0].metric); of a joined
// error, the first invalid field, the others' messages after its own.
func Within(prefix string, err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	out := *e
	out.Field = prefix
	if e.Field != "" {
		out.Field += "." + e.Field
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, other := range joined.Unwrap()[1:] {
			out.Message += "; also " + other.Error()
		}
	}
	return &out
}
