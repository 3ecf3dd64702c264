package deploy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evalflow/evalflow/shared/auth"
	"golang.org/x/crypto/bcrypt"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The stores evalflow runs on the cluster: Redis, the registry, and the Secrets they and the functions need.

// secrets creates what func.yaml refers to, where absent: the seal key
// (evalflow-seal), Redis' password and the config that sets it (evalflow-redis), the
// registry's credentials and htpasswd (evalflow-registry), and
// the callers' tokens file with an operator's token (evalflow-tokens, start's
// EVALFLOW_TOKENS_FILE). Present ones are kept: runs sealed with a key stay readable,
// and the operator's tokens stay theirs.
func (d *deployer) secrets(ctx context.Context) error {
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
		_, err := d.cluster.Kube.CoreV1().Secrets(Namespace).Create(ctx, s, metav1.CreateOptions{FieldManager: "evalflow"})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("secret %s: %w", name, err)
		}
	}
	if err := d.cheapHtpasswd(ctx); err != nil {
		return err
	}
	tokens, err := d.cluster.Kube.CoreV1().Secrets(Namespace).Get(ctx, TokensSecret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("secret %s: %w", TokensSecret, err)
	}
	d.operatorToken = auth.OperatorToken(tokens.Data["tokens"])
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
func (d *deployer) cheapHtpasswd(ctx context.Context) error {
	secrets := d.cluster.Kube.CoreV1().Secrets(Namespace)
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

// stores brings up Redis and the results registry, with the images the config names.
func (d *deployer) stores(ctx context.Context) error {
	var objs []*unstructured.Unstructured
	for file, image := range map[string]string{"eventing/redis.yaml": d.cfg.RedisImage, "eventing/registry.yaml": d.cfg.RegistryImage} {
		o, err := d.manifests(file)
		if err != nil {
			return err
		}
		for _, obj := range o {
			if obj.GetKind() == "Deployment" && image != "" {
				if err := setImage(obj, image); err != nil {
					return err
				}
			}
			if obj.GetKind() == "Deployment" && obj.GetName() == "registry" {
				// The registry reads its htpasswd when it starts: a new one starts it again.
				s, err := d.cluster.Kube.CoreV1().Secrets(Namespace).Get(ctx, registrySecret, metav1.GetOptions{})
				if err != nil {
					return fmt.Errorf("secret %s: %w", registrySecret, err)
				}
				sum := sha256.Sum256(s.Data["htpasswd"])
				if err := unstructured.SetNestedField(obj.Object, hex.EncodeToString(sum[:8]), "spec", "template", "metadata", "annotations", "evalflow.dev/htpasswd"); err != nil {
					return err
				}
			}
		}
		objs = append(objs, o...)
	}
	return d.put(ctx, 3*time.Minute, objs...)
}

// setImage sets the image of a Deployment's one container.
func setImage(obj *unstructured.Unstructured, image string) error {
	containers, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		return fmt.Errorf("%s: want one container, have %d", obj.GetName(), len(containers))
	}
	containers[0].(map[string]any)["image"] = image
	return unstructured.SetNestedSlice(obj.Object, containers, "spec", "template", "spec", "containers")
}
