package tokenv2

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/nutsgate/nutsgate/internal/filewatch"
)

// KeyFile keeps a Verifier's key set in step with an authorized_keys file
// on disk. The file is read again whenever its content changes, whether it
// was replaced by a rename or rewritten in place; a version that does not
// parse, or a file that cannot be read, leaves the last good key set in
// force and is logged with file and line.
type KeyFile struct {
	path     string
	verifier *Verifier
	logger   *zap.Logger
	watcher  filewatch.Watcher
}

// LoadKeyFile reads path and puts its keys in force in v. It fails when the
// file cannot be read or does not parse, naming the file and line. Skipped
// lines and a file with no usable key are logged as warnings.
func LoadKeyFile(path string, v *Verifier, logger *zap.Logger) (*KeyFile, error) {
	kf := &KeyFile{path: path, verifier: v, logger: logger}
	kf.watcher = filewatch.Watcher{Path: path, Load: kf.apply, Logger: logger}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading authorized_keys: %v", err)
	}
	if err := kf.apply(data); err != nil {
		return nil, err
	}
	kf.watcher.Prime(data)
	return kf, nil
}

// Watch checks the file every interval until ctx ends.
func (kf *KeyFile) Watch(ctx context.Context, interval time.Duration) { kf.watcher.Run(ctx, interval) }

// Check reads the file and, if its content changed, puts the new key set in
// force.
func (kf *KeyFile) Check() { kf.watcher.Check() }

// apply parses an authorized_keys content and puts its keys in force.
func (kf *KeyFile) apply(data []byte) error {
	ks, warnings, err := parseAuthorizedKeys(data, !kf.verifier.policy.IgnoreKeyOptions, time.Local)
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
	return nil
}
