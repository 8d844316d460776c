package api

// ResealReport is the reply of POST /api/credentials/reseal: what was
// sealed again under the server's MILLRACE_SECRET_KEY.
type ResealReport struct {
	// KeyID is the fingerprint of the key everything is now sealed under.
	KeyID       string       `json:"key_id"`
	Credentials ResealCounts `json:"credentials"`
	Projects    ResealCounts `json:"projects"`
}

// ResealCounts counts one kind of sealed value. Failed names the values
// no key of the ring opens (they keep their old sealing).
type ResealCounts struct {
	Checked  int      `json:"checked"`
	Resealed int      `json:"resealed"`
	Failed   []string `json:"failed,omitempty"`
}
