package tokenv2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"
)

// DefaultPollInterval is how often a KeyFile looks for changes.
const DefaultPollInterval = 500 * time.Millisecond

// KeyFile keeps a Verifier's key set in step with an authorized_keys file
// on disk. The file is read again whenever its content changes, whether it
// was replaced by a rename or rewritten in place; a version that does not
// parse leaves the last good key set in force.
type KeyFile struct {
	path     string
	verifier *Verifier
	logger   *zap.Logger
	last     []byte // content of the key set in force, or of the last bad version
	missing  bool   // the file could not be read at the last check
}

// LoadKeyFile reads path and puts its keys in force in v. It fails when the
// file cannot be read or does not parse, naming the file and line. Skipped
// lines and a file with no usable key are logged as warnings.
func LoadKeyFile(path string, v *Verifier, logger *zap.Logger) (*KeyFile, error) {
	kf := &KeyFile{path: path, verifier: v, logger: logger}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading authorized_keys: %v", err)
	}
	if err := kf.apply(data); err != nil {
		return nil, err
	}
	return kf, nil
}

// Watch checks the file every interval until ctx ends.
func (kf *KeyFile) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			kf.Check()
		}
	}
}

// Check reads the file and, if its content changed, puts the new key set in
// force. Errors are logged, and the key set in force stays.
func (kf *KeyFile) Check() {
	data, err := os.ReadFile(kf.path)
	if err != nil {
		if !kf.missing {
			kf.logger.Error("authorized_keys unreadable; keeping the keys in force", zap.String("file", kf.path), zap.Error(err))
			kf.missing = true
		}
		return
	}
	kf.missing = false
	if bytes.Equal(data, kf.last) {
		return
	}
	if err := kf.apply(data); err != nil {
		kf.logger.Error("authorized_keys invalid; keeping the keys in force", zap.Error(err))
		kf.last = data // log a bad version once
		return
	}
	kf.logger.Info("authorized_keys reloaded", zap.String("file", kf.path), zap.Int("keys", kf.verifier.Keys().Len()))
}

func (kf *KeyFile) apply(data []byte) error {
	ks, warnings, err := ParseAuthorizedKeys(data)
	var pe *ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s:%d: %v", kf.path, pe.Line, pe.Err)
	}
	if err != nil {
		return fmt.Errorf("%s: %v", kf.path, err)
	}
	for _, w := range warnings {
		kf.logger.Warn("authorized_keys line skipped", zap.String("file", kf.path), zap.Int("line", w.Line), zap.String("reason", w.Reason))
	}
	if ks.Len() == 0 {
		kf.logger.Warn("authorized_keys holds no usable key; every request will be refused", zap.String("file", kf.path))
	}
	for _, k := range ks.Keys() {
		kf.logger.Info("authorized key registered", zap.String("file", kf.path), zap.Int("line", k.Line), zap.String("user", k.User), zap.String("fingerprint", k.SSHFingerprint))
	}
	kf.verifier.SetKeys(ks)
	kf.last = data
	return nil
}
