package install

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evalflow/evalflow/shared/auth"
	"golang.org/x/crypto/bcrypt"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The Secrets the release manifest refers to.

// secrets creates what the manifest refers to, where absent: the seal key
// (evalflow-seal), Redis' password and the config that sets it (evalflow-redis), the
// registry's credentials and htpasswd (evalflow-registry), and
// the callers' tokens file with an operator's token (evalflow-tokens, start's
// EVALFLOW_TOKENS_FILE). Present ones are kept: runs sealed with a key stay readable,
// and the operator's tokens stay theirs.
func (i *installer) secrets(ctx context.Context) error {
	key := make([]byte, 32)
	password, redisPassword := make([]byte, 24), make([]byte, 24)
	rand.Read(key)
	rand.Read(password)
	rand.Read(redisPassword)
	htpasswd, err := htpasswdOf(hex.EncodeToString(password))
	if err != nil {
		return err
	}
	for name, data := range map[string]map[string]string{
		"evalflow-seal": {"key": base64.StdEncoding.EncodeToString(key)},
		RedisSecret: {"password": hex.EncodeToString(redisPassword),
			"redis.conf": "requirepass " + hex.EncodeToString(redisPassword) + "\n"},
		registrySecret: {"username": "evalflow", "password": hex.EncodeToString(password),
			"htpasswd": htpasswd},
		TokensSecret: {"tokens": string(auth.NewFile(auth.NewToken()))},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "evalflow"}}, StringData: data}
		_, err := i.cluster.Kube.CoreV1().Secrets(Namespace).Create(ctx, s, metav1.CreateOptions{FieldManager: "evalflow"})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("secret %s: %w", name, err)
		}
	}
	if err := i.cheapHtpasswd(ctx); err != nil {
		return err
	}
	tokens, err := i.cluster.Kube.CoreV1().Secrets(Namespace).Get(ctx, TokensSecret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("secret %s: %w", TokensSecret, err)
	}
	i.operatorToken = auth.OperatorToken(tokens.Data["tokens"])
	return nil
}

// htpasswdOf is the registry's htpasswd for user evalflow with password. The
// registry checks it on every request it is sent (a results push or pull is a dozen),
// so its bcrypt cost is the least: a work factor slows the guessing of a password
// people chose, and this one is 24 random bytes, which no work factor makes safer.
// At bcrypt's default cost each check took some 80 ms on the project's node, and an
// artifact step about 0.7 s.
func htpasswdOf(password string) (string, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return "", err
	}
	return "evalflow:" + string(hash) + "\n", nil
}

// cheapHtpasswd writes again, at htpasswdOf's cost, the htpasswd of a deployment made
// with a costlier one (from its own password: nothing else changes).
func (i *installer) cheapHtpasswd(ctx context.Context) error {
	secrets := i.cluster.Kube.CoreV1().Secrets(Namespace)
	s, err := secrets.Get(ctx, registrySecret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("secret %s: %w", registrySecret, err)
	}
	_, hash, _ := strings.Cut(strings.TrimSpace(string(s.Data["htpasswd"])), ":")
	if cost, err := bcrypt.Cost([]byte(hash)); err == nil && cost <= bcrypt.MinCost {
		return nil
	}
	htpasswd, err := htpasswdOf(string(s.Data["password"]))
	if err != nil {
		return err
	}
	s.Data["htpasswd"] = []byte(htpasswd)
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{FieldManager: "evalflow"}); err != nil {
		return fmt.Errorf("secret %s: %w", registrySecret, err)
	}
	return nil
}

// registrySecret holds the results registry's credentials and its htpasswd.
const registrySecret = "evalflow-registry"

// RedisSecret holds Redis' password (password, which the functions read) and the
// config file that sets it (redis.conf, which eventing/redis.yaml mounts).
const RedisSecret = "evalflow-redis"

// TokensSecret holds the callers' tokens file (key "tokens"): add a caller with a line
// "TOKEN CALLER"; start reads it again when it changes.
const TokensSecret = "evalflow-tokens"

// prepare readies objects before they are applied: the registry reads its htpasswd when
// it starts, so its pods carry a digest of it, and a new one starts them again.
func (i *installer) prepare(ctx context.Context, objs []*unstructured.Unstructured) error {
	for _, obj := range objs {
		if obj.GetKind() != "Deployment" || obj.GetNamespace() != Namespace || obj.GetName() != "registry" {
			continue
		}
		s, err := i.cluster.Kube.CoreV1().Secrets(Namespace).Get(ctx, registrySecret, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("secret %s: %w", registrySecret, err)
		}
		sum := sha256.Sum256(s.Data["htpasswd"])
		if err := unstructured.SetNestedField(obj.Object, hex.EncodeToString(sum[:8]), "spec", "template", "metadata", "annotations", "evalflow.dev/htpasswd"); err != nil {
			return err
		}
	}
	return nil
}
