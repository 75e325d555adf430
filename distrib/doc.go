// Package distrib moves plugin archives around a Nearby mesh safely: the
// dist folder a node shares, the HTTP API that serves it, fetching from
// peers, verification, safe extraction, atomic installation, and the
// publisher pins that decide whose code may be installed.
//
// # Archives
//
// A plugin is published as NAME-VERSION.tar.gz (ParseFileName, FileName):
// NAME is lowercase `[a-z][a-z0-9]*(-[a-z][a-z0-9]*)*` and VERSION strict
// semver, so "chat-1.2.0-rc.1.tar.gz" is chat at 1.2.0-rc.1. The archive
// holds nearby.json (Manifest) at its root, whose name and version must
// agree with the file name. Pack makes such archives deterministically
// from a directory; Publish copies one into a dist folder.
//
// # Signatures and trust
//
// A detached signature NAME-VERSION.tar.gz.sig sits beside the archive: one
// line "nearby-sig-v1 SIGNER SIG", an ed25519 signature by the publisher's
// key (LoadOrCreatePublisherKey) over a domain-separated SHA-256 of the
// archive bytes (Sign, ParseSignature). SIGNER is a SignerID,
// "ed25519:<base64url key>". A TrustStore pins one signer per plugin name,
// on first install or by hand. Store.Install refuses a signer other than
// the pinned one, and refuses unsigned archives from peers unless told
// otherwise. docs/SECURITY.md has the threat model; docs/ARCHIVES.md the
// formats.
//
// # The dist folder and its HTTP API
//
// Dist watches one directory with fsnotify, debounces events, indexes every
// complete archive (Inspect: name, manifest, limits, signature, SHA-256) and
// lists the others as Invalid with the reason. Its Handler serves, read-only:
//
//	GET /index.json        Index: {"entries": [IndexEntry...], "invalid": [...]}
//	GET /files/FILE        an indexed archive; Range supported; ETag "<sha256>"
//	GET /files/FILE.sig    its signature, 404 if unsigned
//
// # Fetching and installing
//
// Fetch downloads one IndexEntry from any of several Sources (each an
// *http.Client and base URL, so the node can route requests over mesh
// streams), resuming with Range on the next source when one fails or
// stalls, and verifies size, SHA-256 and signature. Store.Install verifies
// again, applies the trust and version policy, extracts into a staging
// directory (Extract: safe against traversal, links leaving the tree,
// special files, lying headers and decompression bombs, see Limits),
// renames the tree into place and switches the current version atomically,
// keeping the previous one. Newest picks a version by semver.
//
// This package does not import the mesh: the node wiring adapts peers to
// Sources and serves Handler over its streams.
package distrib
