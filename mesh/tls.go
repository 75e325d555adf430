package mesh

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// TLS parameters of the mesh.
const (
	alpnProto  = "nearby-mesh/1"
	proofLabel = "EXPORTER-nearby-mesh-proof"
	roleDialer = 'D' // appended to the exporter material by the TLS client
	roleListen = 'L' // ... and by the TLS server
)

// newCertificate makes a self-signed certificate for the node's key. A fresh
// one per process is fine: peers check the key, not the certificate.
func newCertificate(id *Identity) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mesh: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "nearby " + string(id.ID)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, id.Public, id.Private)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mesh: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mesh: parse own certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: id.Private, Leaf: leaf}, nil
}

// peerKeyID checks a peer's certificate chain (one self-signed ed25519
// certificate) and returns the node id of its key.
func peerKeyID(rawCerts [][]byte) (NodeID, error) {
	if len(rawCerts) != 1 {
		return "", fmt.Errorf("%w: peer sent %d certificates, want 1", ErrIdentity, len(rawCerts))
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return "", fmt.Errorf("%w: peer certificate: %v", ErrIdentity, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return "", fmt.Errorf("%w: peer certificate key is %T, want ed25519", ErrIdentity, cert.PublicKey)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return "", fmt.Errorf("%w: peer certificate is not self-signed: %v", ErrIdentity, err)
	}
	return IDFromPublicKey(pub), nil
}

// tlsConfig returns the TLS configuration for one connection. The dialer
// passes the id it expects to reach (or "" for a static address); the check
// runs inside the TLS handshake, so a wrong node fails before any data.
// Certificates are not chained to any authority: the node id is the key.
func (m *Mesh) tlsConfig(dialer bool, expect NodeID) *tls.Config {
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		id, err := peerKeyID(rawCerts)
		if err != nil {
			return err
		}
		if expect != "" && id != expect {
			return fmt.Errorf("%w: expected node %s, reached %s", ErrIdentity, expect.Short(), id.Short())
		}
		return nil
	}
	c := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{m.cert},
		NextProtos:             []string{alpnProto},
		SessionTicketsDisabled: true,
		VerifyPeerCertificate:  verify,
	}
	if dialer {
		// Chain verification is replaced by VerifyPeerCertificate above.
		c.InsecureSkipVerify = true
		c.ServerName = "nearby"
	} else {
		c.ClientAuth = tls.RequireAnyClientCert
	}
	return c
}

// connPeerID returns the node id of the peer of a finished TLS handshake.
func connPeerID(cs tls.ConnectionState) (NodeID, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", fmt.Errorf("%w: no peer certificate", ErrIdentity)
	}
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	return peerKeyID(raw)
}

// proofFor computes the mesh-key proof of one side of one TLS session:
// HMAC-SHA256(key, exporter ‖ role). The exporter material is unique to the
// session, so a proof recorded elsewhere does not verify here, and the role
// byte stops a peer from reflecting our own proof back at us.
func proofFor(key Key, cs tls.ConnectionState, role byte) ([32]byte, error) {
	var p [32]byte
	ekm, err := cs.ExportKeyingMaterial(proofLabel, nil, 32)
	if err != nil {
		return p, fmt.Errorf("mesh: tls exporter: %w", err)
	}
	if len(ekm) != 32 {
		return p, errors.New("mesh: tls exporter returned short material")
	}
	mac := hmac.New(sha256.New, key[:])
	mac.Write(ekm)
	mac.Write([]byte{role})
	copy(p[:], mac.Sum(nil))
	return p, nil
}
