package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// objectTimeout bounds a Get or Put whose context has no deadline. The
	// client otherwise applies its default (seconds), which a large Parquet
	// file over a slow link would exceed.
	objectTimeout = 10 * time.Minute
	// defaultStall ends a Get or Put that makes no progress this long: a
	// request lost in a NATS restart is never answered, and a reader whose
	// object is deleted under it waits for chunks that never come.
	defaultStall = 30 * time.Second
)

var errStalled = errors.New("no progress")

// Objects keeps objects in a JetStream Object Store bucket. With file
// storage they survive a NATS restart; with memory storage a restart loses
// them, which readers see as ErrNotFound (a miss, and a rebuild upstream).
type Objects struct {
	js  jetstream.JetStream
	cfg jetstream.ObjectStoreConfig

	stall time.Duration

	mu  sync.Mutex
	obs jetstream.ObjectStore
}

// OpenObjects creates or updates the bucket and opens it.
func OpenObjects(ctx context.Context, js jetstream.JetStream, bucket string, st jetstream.StorageType, replicas int) (*Objects, error) {
	if replicas < 1 {
		replicas = 1
	}
	o := &Objects{js: js, cfg: jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "Millrace pre-aggregate materializations (Parquet)",
		Storage:     st,
		Replicas:    replicas,
	}, stall: defaultStall}
	if _, err := o.open(ctx, true); err != nil {
		return nil, err
	}
	return o, nil
}

// open returns the bucket, (re)creating it when asked: after a NATS
// restart lost a memory bucket, the next Put makes it again.
func (o *Objects) open(ctx context.Context, create bool) (jetstream.ObjectStore, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.obs != nil && !create {
		return o.obs, nil
	}
	obs, err := o.js.CreateOrUpdateObjectStore(ctx, o.cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: object store bucket %s: %w", o.cfg.Bucket, err)
	}
	o.obs = obs
	return obs, nil
}

// gone: err says the bucket's stream no longer exists (a memory bucket
// after a NATS restart, or deleted by an operator). A direct get from a
// missing stream has no responders, which can also be a server still
// starting: ask the server whether the bucket exists.
func (o *Objects) gone(ctx context.Context, err error) bool {
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
		return true
	}
	if !errors.Is(err, nats.ErrNoResponders) {
		return false
	}
	_, err = o.js.ObjectStore(ctx, o.cfg.Bucket)
	return errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// watch bounds an operation: objectTimeout when ctx has no deadline, and
// o.stall without progress (touch is progress).
func (o *Objects) watch(ctx context.Context) (wctx context.Context, touch func(), stop func()) {
	var cancelT context.CancelFunc = func() {}
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancelT = context.WithTimeout(ctx, objectTimeout)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	t := time.AfterFunc(o.stall, func() { cancel(errStalled) })
	return ctx, func() { t.Reset(o.stall) }, func() { t.Stop(); cancel(nil); cancelT() }
}

// failed words err, naming a stall as one.
func (o *Objects) failed(ctx context.Context, what, key string, err error) error {
	if errors.Is(context.Cause(ctx), errStalled) {
		err = fmt.Errorf("%w for %v", errStalled, o.stall)
	}
	return fmt.Errorf("storage: %s %s (%s): %w", what, key, o, err)
}

type progressReader struct {
	r     io.Reader
	touch func()
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.touch()
	return n, err
}

type progressWriter struct {
	w     io.Writer
	touch func()
}

func (p progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.touch()
	return n, err
}

// Put stores the object. JetStream publishes the object's metadata only
// after its last chunk, so a reader never sees a partial object; a failed
// Put purges the chunks it sent.
func (o *Objects) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := CheckKey(key); err != nil {
		return 0, err
	}
	ctx, touch, stop := o.watch(ctx)
	defer stop()
	obs, err := o.open(ctx, false)
	if err != nil {
		return 0, err
	}
	info, err := obs.Put(ctx, jetstream.ObjectMeta{Name: key}, progressReader{r, touch})
	if err != nil && o.gone(ctx, err) {
		// Make the bucket again and retry, if the data can be read again.
		if s, ok := r.(io.Seeker); ok {
			if _, serr := s.Seek(0, io.SeekStart); serr == nil {
				if obs, err = o.open(ctx, true); err != nil {
					return 0, err
				}
				info, err = obs.Put(ctx, jetstream.ObjectMeta{Name: key}, progressReader{r, touch})
			}
		}
	}
	if err != nil {
		return 0, o.failed(ctx, "putting", key, err)
	}
	return int64(info.Size), nil
}

// Get copies the object into w; the client checks its digest at the end.
func (o *Objects) Get(ctx context.Context, key string, w io.Writer) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	ctx, touch, stop := o.watch(ctx)
	defer stop()
	obs, err := o.open(ctx, false)
	if err != nil {
		return err
	}
	res, err := obs.Get(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) || (err != nil && o.gone(ctx, err)) {
		return fmt.Errorf("storage: %s (%s): %w", key, o, ErrNotFound)
	} else if err != nil {
		return o.failed(ctx, "getting", key, err)
	}
	// The result's Read holds its lock while it waits for a chunk, until
	// the context's deadline, and ignores cancellation meanwhile. So it is
	// read on its own goroutine through a pipe, which we close when ctx
	// ends or stalls: we return at once, and that goroutine ends at its
	// next chunk or the deadline.
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, res)
		pw.CloseWithError(err)
		res.Close()
	}()
	unwatch := context.AfterFunc(ctx, func() { pr.CloseWithError(context.Cause(ctx)) })
	defer unwatch()
	if _, err := io.Copy(progressWriter{w, touch}, pr); err != nil {
		pr.Close()
		// Deleted while we read it: its chunks were purged under us.
		ictx, cancel := context.WithTimeout(context.Background(), o.stall)
		defer cancel()
		if _, ierr := obs.GetInfo(ictx, key); errors.Is(ierr, jetstream.ErrObjectNotFound) || (ierr != nil && o.gone(ictx, ierr)) {
			return fmt.Errorf("storage: %s (%s) was deleted while being read: %w", key, o, ErrNotFound)
		}
		return o.failed(ctx, "reading", key, err)
	}
	return nil
}

// Delete removes the object; absent (or a lost bucket) is fine.
func (o *Objects) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	ctx, _, stop := o.watch(ctx)
	defer stop()
	obs, err := o.open(ctx, false)
	if err != nil {
		return err
	}
	err = obs.Delete(ctx, key)
	if err == nil || errors.Is(err, jetstream.ErrObjectNotFound) || o.gone(ctx, err) {
		return nil
	}
	return o.failed(ctx, "deleting", key, err)
}

func (o *Objects) String() string { return "nats:" + o.cfg.Bucket }
