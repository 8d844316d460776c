package semantic

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
)

// hashVersion changes when the SQL a definition compiles to changes (the
// result types above, say), so every build made by older code is rebuilt.
const hashVersion = "semantic/v1"

// ModelHash identifies a model's definition: its canonical JSON without
// positions (so moving a model in its file changes nothing).
func ModelHash(m *Model) string {
	c := *m
	c.Pos = Pos{}
	c.Dimensions = slices.Clone(m.Dimensions)
	for i := range c.Dimensions {
		c.Dimensions[i].Pos = Pos{}
	}
	c.Metrics = slices.Clone(m.Metrics)
	for i := range c.Metrics {
		c.Metrics[i].Pos = Pos{}
	}
	c.PreAggregates = slices.Clone(m.PreAggregates)
	for i := range c.PreAggregates {
		p := &c.PreAggregates[i]
		p.Pos = Pos{}
		p.Filters = slices.Clone(p.Filters)
		for j := range p.Filters {
			p.Filters[j].Pos = Pos{}
		}
	}
	return digest(struct {
		V string `json:"v"`
		M Model  `json:"m"`
	}{hashVersion, c})
}

// PreAggHash identifies what a pre-aggregate's materialization holds: the
// model's source, the dimensions and metrics it uses (name, type, SQL,
// percentile), its time dimension and granularity, its filters and its
// partitioning (which changes the stored layout). Descriptions, other
// fields of the model, max_rows and the refresh schedule are left out: a
// change there needs no rebuild.
func PreAggHash(m *Model, p *PreAggregate) string {
	type dim struct {
		Name string  `json:"name"`
		Type DimType `json:"type"`
		SQL  string  `json:"sql,omitempty"`
	}
	type met struct {
		Name       string     `json:"name"`
		Type       MetricType `json:"type"`
		SQL        string     `json:"sql,omitempty"`
		Percentile float64    `json:"percentile,omitempty"`
	}
	type filter struct {
		Field    string         `json:"field"`
		Operator FilterOperator `json:"operator"`
		Values   []any          `json:"values,omitempty"`
	}
	var h struct {
		V           string   `json:"v"`
		Table       string   `json:"table,omitempty"`
		SQL         string   `json:"sql,omitempty"`
		Dims        []dim    `json:"dims"`
		Metrics     []met    `json:"metrics"`
		Time        *dim     `json:"time,omitempty"`
		Granularity Grain    `json:"granularity,omitempty"`
		Filters     []filter `json:"filters,omitempty"`
		PartitionBy Grain    `json:"partitionBy,omitempty"`
	}
	h.V, h.Table, h.SQL = hashVersion, m.Table, m.SQL
	h.Dims, h.Metrics = []dim{}, []met{}
	for _, name := range p.Dimensions {
		if d := m.Dimension(name); d != nil {
			h.Dims = append(h.Dims, dim{d.Name, d.Type, d.SQL})
		} else {
			h.Dims = append(h.Dims, dim{Name: name})
		}
	}
	for _, name := range p.Metrics {
		if x := m.Metric(name); x != nil {
			h.Metrics = append(h.Metrics, met{x.Name, x.Type, x.SQL, x.Percentile})
		} else {
			h.Metrics = append(h.Metrics, met{Name: name})
		}
	}
	if p.TimeDimension != "" {
		h.Time = &dim{Name: p.TimeDimension}
		if d := m.Dimension(p.TimeDimension); d != nil {
			h.Time = &dim{d.Name, d.Type, d.SQL}
		}
		h.Granularity = p.Granularity
	}
	for _, f := range p.Filters {
		h.Filters = append(h.Filters, filter{f.Target.FieldID, f.Operator, f.Values})
	}
	h.PartitionBy = p.Refresh.PartitionBy
	return digest(h)
}

func digest(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a value JSON cannot hold (NaN in a filter) gets here; a
		// parsed model never has one. Hash its printed form instead.
		b = []byte(err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Dimension returns the model's dimension named name, or nil.
func (m *Model) Dimension(name string) *Dimension {
	for i := range m.Dimensions {
		if m.Dimensions[i].Name == name {
			return &m.Dimensions[i]
		}
	}
	return nil
}

// Metric returns the model's metric named name, or nil.
func (m *Model) Metric(name string) *Metric {
	for i := range m.Metrics {
		if m.Metrics[i].Name == name {
			return &m.Metrics[i]
		}
	}
	return nil
}

// PreAggregate returns the model's pre-aggregate named name, or nil.
func (m *Model) PreAggregate(name string) *PreAggregate {
	for i := range m.PreAggregates {
		if m.PreAggregates[i].Name == name {
			return &m.PreAggregates[i]
		}
	}
	return nil
}
