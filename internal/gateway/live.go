package gateway

// liveRoutes registers the live routes (SSE, execute and wait, callbacks):
// a stub until the gateway-live slice lands this file.
func (g *Gateway) liveRoutes() {}
