// The third-party code of the browser page, bundled into ../vendor.js by `npm run build`.
// Everything the page's own modules (../*.js) need from npm is re-exported here, so that
// the page loads exactly two kinds of script: ours, and this one pinned bundle.
export { ed25519 } from '@noble/curves/ed25519.js';
export { hkdf } from '@noble/hashes/hkdf.js';
export { sha256 } from '@noble/hashes/sha2.js';
export { gcm } from '@noble/ciphers/aes.js';
export { createBLAKE3 } from 'hash-wasm';
export { wordlist } from '@scure/bip39/wordlists/english.js';
