package server

import (
	"context"
	"net/http"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/tools"
	"github.com/millrace/millrace/internal/ui"
	"github.com/millrace/millrace/internal/wire"
)

// WithUI serves the web UI under /ui/ with cfg (the server passes its
// OIDC issuer so the login page may read its discovery document).
func WithUI(cfg ui.Config) Option { return func(a *API) { a.uiCfg = cfg } }

// WithStreams gives GET /api/streams what it reports.
func WithStreams(fn func(context.Context) api.Streams) Option {
	return func(a *API) { a.streams = fn }
}

// uiRoutes are the web UI (public static files: the data behind them needs
// a token) and the two reads only the UI needs: a playbook's step graph
// with its validation problems, and the JetStream streams' state.
func (a *API) uiRoutes() {
	cfg := a.uiCfg
	if cfg.APIBase == "" {
		cfg.APIBase = "/api"
	}
	h := ui.Handler(cfg)
	a.handle("GET /ui/", auth.Public, h.ServeHTTP)
	a.handle("GET /ui", auth.Public, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ui.Prefix, http.StatusMovedPermanently)
	})
	a.route("GET /api/graph/{path...}", auth.Readers, a.graphGet)
	a.route("GET /api/streams", auth.Readers, func(w http.ResponseWriter, r *http.Request) (any, error) {
		if a.streams == nil {
			return api.Streams{NATS: "not reported by this server", Streams: []api.StreamInfo{}}, nil
		}
		return a.streams(r.Context()), nil
	})
}

// graphGet answers a registered playbook's steps and arcs, checked again
// with this server's tool kinds so that the catalog page shows every
// problem and warning.
func (a *API) graphGet(w http.ResponseWriter, r *http.Request) (any, error) {
	e, err := a.loadCatalog(r)
	if err != nil {
		return nil, err
	}
	pb, errs, warns := playbook.Check(e.Path+".yaml", []byte(e.Content), tools.Kinds())
	g := api.PlaybookGraph{Path: e.Path, Version: e.Version, CatalogID: e.CatalogID, Steps: []api.GraphStep{}, Arcs: []api.GraphArc{},
		Errors: nonNil(errs), Warnings: nonNil(warns)}
	if pb == nil {
		return g, nil
	}
	if s := pb.StartStep(); s != nil {
		g.Start = s.Name
	}
	for _, s := range pb.Steps {
		gs := api.GraphStep{Name: s.Name, Desc: s.Desc, Loop: s.Loop != nil, Line: s.Line}
		if s.Tool != nil {
			gs.Kind, _ = s.Tool["kind"].(string)
		} else {
			gs.Kind = "tasks"
			for _, t := range s.Tasks {
				gs.Tasks = append(gs.Tasks, t.Name)
			}
		}
		if s.Next != nil {
			gs.Mode = s.Next.Mode
			for _, arc := range s.Next.Arcs {
				g.Arcs = append(g.Arcs, api.GraphArc{From: s.Name, To: arc.Step, When: arc.When})
			}
		}
		g.Steps = append(g.Steps, gs)
	}
	return g, nil
}

func nonNil(p playbook.Problems) []playbook.Problem {
	if p == nil {
		return []playbook.Problem{}
	}
	return p
}

// streamsInfo reports the streams this server uses and their consumers,
// each consumer a pool of workers. Stream state comes from the monitor's
// report (one reader of NATS for the UI, /api/ops and the gauges).
func (s *Server) streamsInfo(ctx context.Context) api.Streams {
	out := api.Streams{NATS: "ok", Streams: []api.StreamInfo{}}
	if st, err := store.ReadValue(ctx, s.st, func(q store.Querier) (store.Stats, error) { return q.Stats(ctx) }); err == nil {
		ws := wire.Stats(st)
		out.Stats = &ws
	}
	if s.query != nil {
		if qs, err := s.query.QueueStats(ctx); err == nil {
			q := wire.QueueStats(qs)
			out.Queries = &q
		}
	}
	c := s.nats.get()
	switch {
	case c == nil:
		out.NATS = "connecting: notifications wait in the outbox"
		return out
	case !c.NC.IsConnected():
		out.NATS = "disconnected: notifications wait in the outbox"
		return out
	}
	rep, err := s.mon.Report(ctx)
	if err != nil {
		out.NATS = "not sampled: " + err.Error()
		return out
	}
	for _, os := range rep.NATS.Streams {
		si := api.StreamInfo{Name: os.Name, Role: streamRoles[os.Kind], Subjects: os.Subjects, Messages: os.Messages, Bytes: os.Bytes,
			Consumers: []api.ConsumerInfo{}, Error: os.Error}
		if si.Subjects == nil {
			si.Subjects = []string{}
		}
		for _, c := range os.Consumers {
			si.Consumers = append(si.Consumers, api.ConsumerInfo{Name: c.Name, Pending: c.Unprocessed, InFlight: c.AckPending,
				MaxInFlight: c.MaxAckPending, Redelivered: c.Redelivered, Waiting: c.Waiting, AckWait: c.AckWait, MaxDeliver: c.MaxDeliver,
				Delivered: c.Delivered, LastActive: c.LastActive})
		}
		out.Streams = append(out.Streams, si)
	}
	return out
}

// streamRoles name a worker kind's stream as GET /api/streams always has.
var streamRoles = map[string]string{bus.KindCommands: "commands", bus.KindWarehouse: "queries", bus.KindPreAggregate: "preaggregates"}
