#!/usr/bin/env bash
# Regenerates every certificate fixture in this folder (see README.md for what each
# one is for). Idempotent: it deletes everything here except make.sh and README.md,
# then rebuilds it all. Needs only the `openssl` CLI (written against OpenSSL 3.0).
#
#   bash tests/data/certs/make.sh        # from anywhere
#
# The validity window starts "now" and lasts $DAYS days, so a rerun changes every
# date; the script rewrites the dates block in README.md to match.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DIR"

DAYS=7300
DOMAIN=gatehouse.test
HOST="node1.$DOMAIN"
PASS=secret
ORG="Gatehouse Test"

# Keep the system openssl.cnf out of the picture: every extension is spelled out below.
export OPENSSL_CONF=/dev/null

find . -mindepth 1 -maxdepth 1 ! -name make.sh ! -name README.md -exec rm -rf -- {} +

TMP="$(mktemp -d)"
trap 'rm -rf -- "$TMP"' EXIT

say() { printf '==> %s\n' "$*" >&2; }

# ---------------------------------------------------------------- keys
# All private keys come out of genpkey as unencrypted PKCS#8 ("BEGIN PRIVATE KEY").
rsa_key() { openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$1" -out "$2" 2>/dev/null; }
ec_key() {
  openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:$1" \
    -pkeyopt ec_param_enc:named_curve -out "$2"
}
ed_key() { openssl genpkey -algorithm "$1" -out "$2"; }

# ---------------------------------------------------------------- extensions
# leaf_ext KU SAN EKU  -> an [ext] section on stdout. KU is "rsa" (digitalSignature,
# keyEncipherment) or "sig" (digitalSignature only); an empty SAN or EKU leaves that
# extension out entirely.
leaf_ext() {
  local ku=$1 san=$2 eku=$3
  echo "[ext]"
  echo "basicConstraints = critical, CA:FALSE"
  if [[ $ku == rsa ]]; then
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
  else
    echo "keyUsage = critical, digitalSignature"
  fi
  echo "subjectKeyIdentifier = hash"
  echo "authorityKeyIdentifier = keyid:always"
  [[ -n $san ]] && echo "subjectAltName = $san"
  [[ -n $eku ]] && echo "extendedKeyUsage = $eku"
  return 0
}

ca_ext() { # ca_ext [PATHLEN]
  echo "[ext]"
  if [[ -n ${1:-} ]]; then
    echo "basicConstraints = critical, CA:TRUE, pathlen:$1"
  else
    echo "basicConstraints = critical, CA:TRUE"
  fi
  echo "keyUsage = critical, keyCertSign, cRLSign"
  echo "subjectKeyIdentifier = hash"
  echo "authorityKeyIdentifier = keyid:always"
}

# self_signed_ca KEY CN EXTFILE OUT
self_signed() {
  openssl req -x509 -new -key "$1" -subj "/O=$ORG/CN=$2" -days "$DAYS" -sha256 \
    -config "$3" -extensions ext -out "$4"
}

# issue NAME KEY CN EXTFILE|"" CA_CERT CA_KEY -> $TMP/NAME.crt
# No -set_serial/-CAserial: OpenSSL 3.0 then picks a random 159-bit serial and writes
# no .srl file. An empty EXTFILE yields an X.509 v1 certificate (no extensions at all).
issue() {
  local name=$1 key=$2 cn=$3 ext=$4 cacert=$5 cakey=$6
  openssl req -new -key "$key" -subj "/O=$ORG/CN=$cn" -out "$TMP/$name.csr" 2>/dev/null
  local extargs=()
  [[ -n $ext ]] && extargs=(-extfile "$ext" -extensions ext)
  openssl x509 -req -in "$TMP/$name.csr" -CA "$cacert" -CAkey "$cakey" \
    -days "$DAYS" -sha256 "${extargs[@]}" -out "$TMP/$name.crt" 2>/dev/null
}

# leaf NAME KEYFILE CN KU SAN EKU -> NAME.pem = leaf cert + int.pem + key (as given)
leaf() {
  local name=$1 key=$2 cn=$3 ku=$4 san=$5 eku=$6
  leaf_ext "$ku" "$san" "$eku" >"$TMP/$name.ext"
  issue "$name" "$key" "$cn" "$TMP/$name.ext" int.pem int.key
  cat "$TMP/$name.crt" int.pem "$key" >"$name.pem"
}

SAN1="DNS:$HOST"
EKU="serverAuth, clientAuth"

# ---------------------------------------------------------------- CAs
say "root CA, intermediate, other root"
rsa_key 2048 ca.key
ca_ext >"$TMP/ca.ext"
self_signed ca.key "Gatehouse Test Root CA" "$TMP/ca.ext" ca.pem

rsa_key 2048 int.key
ca_ext 0 >"$TMP/int.ext"
issue int int.key "Gatehouse Test Intermediate CA" "$TMP/int.ext" ca.pem ca.key
cp "$TMP/int.crt" int.pem

rsa_key 2048 "$TMP/other-ca.key"
self_signed "$TMP/other-ca.key" "Gatehouse Other Root CA" "$TMP/ca.ext" other-ca.pem

# ---------------------------------------------------------------- the good leaf
say "good leaf and its encodings"
rsa_key 2048 good.key
leaf_ext rsa "$SAN1" "$EKU" >"$TMP/good.ext"
issue good good.key "$HOST" "$TMP/good.ext" int.pem int.key
cat "$TMP/good.crt" int.pem good.key >good.pem
cat "$TMP/good.crt" int.pem >good-chain-only.pem
openssl pkey -in good.key -traditional -out "$TMP/good.pkcs1.key"
cat "$TMP/good.crt" int.pem "$TMP/good.pkcs1.key" >good-pkcs1.pem
openssl pkcs8 -topk8 -in good.key -v2 aes-256-cbc -passout "pass:$PASS" \
  -out "$TMP/good.enc.key" # PBES2 / PBKDF2-HMAC-SHA256 / AES-256-CBC
cat "$TMP/good.crt" int.pem "$TMP/good.enc.key" >good-encrypted.pem
# Legacy OpenSSL PEM encryption (Proc-Type: 4,ENCRYPTED + DEK-Info), as `genrsa -aes256` wrote.
openssl pkey -in good.key -traditional -aes256 -passout "pass:$PASS" -out "$TMP/good.legacy.key"
cat "$TMP/good.crt" int.pem "$TMP/good.legacy.key" >good-legacy-encrypted.pem
openssl x509 -in "$TMP/good.crt" -outform DER -out good.der
cp good.der good.cer

say "PKCS#12"
p12() { # p12 OUT PASSWORD [extra pkcs12 args...]
  local out=$1 pass=$2
  shift 2
  openssl pkcs12 -export -in "$TMP/good.crt" -inkey good.key -certfile int.pem \
    -name "$HOST" -passout "pass:$pass" "$@" -out "$out"
}
p12 good.pfx "$PASS"
p12 good-legacy.pfx "$PASS" -legacy
p12 good-nopass.pfx ""
p12 cng-software.pfx "$PASS" -CSP "Microsoft Software Key Storage Provider"
p12 cng-platform.pfx "$PASS" -CSP "Microsoft Platform Crypto Provider"
p12 cng-smartcard.pfx "$PASS" -CSP "Microsoft Smart Card Key Storage Provider"
p12 csp-legacy.pfx "$PASS" -CSP "Microsoft Enhanced RSA and AES Cryptographic Provider"

# ---------------------------------------------------------------- key types and sizes
say "key types and sizes (RSA 8192 and 9216 take a while)"
ec_key P-256 "$TMP/p256.key"
openssl pkey -in "$TMP/p256.key" -traditional -out "$TMP/p256.sec1.key" # SEC1
leaf ec-p256 "$TMP/p256.sec1.key" "$HOST" sig "$SAN1" "$EKU"
openssl pkey -in "$TMP/p256.key" -traditional -des3 -passout "pass:$PASS" -out "$TMP/p256.legacy.key"
cat "$TMP/ec-p256.crt" int.pem "$TMP/p256.legacy.key" >ec-p256-legacy-encrypted.pem
ec_key P-384 "$TMP/p384.key" # PKCS#8
leaf ec-p384 "$TMP/p384.key" "$HOST" sig "$SAN1" "$EKU"
ec_key P-521 "$TMP/p521.key"
leaf ec-p521 "$TMP/p521.key" "$HOST" sig "$SAN1" "$EKU"
ec_key secp256k1 "$TMP/k256.key"
leaf ec-secp256k1 "$TMP/k256.key" "$HOST" sig "$SAN1" "$EKU"
ed_key ED25519 "$TMP/ed25519.key"
leaf ed25519 "$TMP/ed25519.key" "$HOST" sig "$SAN1" "$EKU"
ed_key ED448 "$TMP/ed448.key"
leaf ed448 "$TMP/ed448.key" "$HOST" sig "$SAN1" "$EKU"
for bits in 1024 8192 9216; do
  rsa_key "$bits" "$TMP/rsa$bits.key"
  leaf "rsa$bits" "$TMP/rsa$bits.key" "$HOST" rsa "$SAN1" "$EKU"
done

# ---------------------------------------------------------------- names and usages
say "SAN, wildcard, EKU variants"
for n in multi-san wildcard bad-wildcard bad-wildcard-middle cn-only no-san \
  client-only no-eku self-signed v1 mismatch; do
  rsa_key 2048 "$TMP/$n.key"
done
leaf multi-san "$TMP/multi-san.key" "$HOST" rsa \
  "DNS:$HOST, DNS:node2.$DOMAIN, IP:127.0.0.1, DNS:last.$DOMAIN" "$EKU"
leaf wildcard "$TMP/wildcard.key" "*.$DOMAIN" rsa "DNS:*.$DOMAIN" "$EKU"
leaf bad-wildcard "$TMP/bad-wildcard.key" "node*.$DOMAIN" rsa "DNS:node*.$DOMAIN" "$EKU"
leaf bad-wildcard-middle "$TMP/bad-wildcard-middle.key" "node1.*.$DOMAIN" rsa \
  "DNS:node1.*.$DOMAIN" "$EKU"
leaf cn-only "$TMP/cn-only.key" "$HOST" rsa "DNS:other.$DOMAIN" "$EKU"
leaf no-san "$TMP/no-san.key" "$HOST" rsa "" "$EKU"
leaf client-only "$TMP/client-only.key" "$HOST" rsa "$SAN1" "clientAuth"
leaf no-eku "$TMP/no-eku.key" "$HOST" rsa "$SAN1" ""

leaf_ext rsa "$SAN1" "$EKU" >"$TMP/self-signed.ext"
self_signed "$TMP/self-signed.key" "$HOST" "$TMP/self-signed.ext" "$TMP/self-signed.crt"
cat "$TMP/self-signed.crt" "$TMP/self-signed.key" >self-signed.pem

issue v1 "$TMP/v1.key" "$HOST" "" int.pem int.key # no extensions -> Version 1
cat "$TMP/v1.crt" int.pem "$TMP/v1.key" >v1.pem

cat "$TMP/good.crt" int.pem "$TMP/mismatch.key" >mismatch.pem

# ---------------------------------------------------------------- unreadable inputs
say "unreadable inputs"
: >empty.pem
# Random bytes, but never starting like DER (0x30) or PEM ('-').
while :; do
  openssl rand -out garbage.bin 1024
  first=$(od -An -tx1 -N1 garbage.bin | tr -d ' ')
  [[ $first != 30 && $first != 2d ]] && break
done
# good.pem cut halfway through the leaf certificate's base64: BEGIN line, half the
# body, no END line.
lines=$(wc -l <"$TMP/good.crt")
head -n $((1 + (lines - 2) / 2)) "$TMP/good.crt" >truncated.pem
cp good.key key-only.pem
cat >not-a-cert.txt <<'EOF'
This is not a certificate.
It is a plain text file that happens to sit next to the certificate fixtures,
so the checker must refuse it as unreadable input.
EOF

# ---------------------------------------------------------------- sanity checks
say "sanity checks"
fail() { printf 'make.sh: %s\n' "$*" >&2; exit 1; }
version_of() { openssl x509 -in "$1" -noout -text | sed -n 's/^ *Version: \([0-9]\).*/\1/p'; }

openssl verify -CAfile ca.pem int.pem >/dev/null || fail "int.pem does not chain to ca.pem"
for f in good good-pkcs1 good-encrypted good-chain-only ec-p256 ec-p384 ec-p521 ec-secp256k1 ed25519 \
  ed448 rsa1024 rsa8192 rsa9216 multi-san wildcard bad-wildcard bad-wildcard-middle \
  cn-only no-san client-only no-eku v1 mismatch; do
  openssl verify -CAfile ca.pem -untrusted int.pem "$f.pem" >/dev/null ||
    fail "$f.pem does not chain to ca.pem"
  [[ $f == v1 ]] || [[ $(version_of "$f.pem") == 3 ]] || fail "$f.pem is not v3"
done
[[ $(version_of v1.pem) == 1 ]] || fail "v1.pem is not Version 1"
! openssl verify -CAfile ca.pem self-signed.pem >/dev/null 2>&1 ||
  fail "self-signed.pem unexpectedly chains to ca.pem"
grep -q -- '-----BEGIN RSA PRIVATE KEY-----' good-pkcs1.pem || fail "good-pkcs1.pem key is not PKCS#1"
grep -q -- '-----BEGIN ENCRYPTED PRIVATE KEY-----' good-encrypted.pem ||
  fail "good-encrypted.pem key is not encrypted PKCS#8"
cmp -s <(openssl pkey -in good-encrypted.pem -passin "pass:$PASS" -pubout) \
  <(openssl pkey -in good.key -pubout) || fail "good-encrypted.pem key != good.key"
grep -q -- '-----BEGIN EC PRIVATE KEY-----' ec-p256.pem || fail "ec-p256.pem key is not SEC1"
grep -q -- 'DEK-Info: AES-256-CBC' good-legacy-encrypted.pem || fail "good-legacy-encrypted.pem is not legacy-encrypted"
grep -q -- 'DEK-Info: DES-EDE3-CBC' ec-p256-legacy-encrypted.pem || fail "ec-p256-legacy-encrypted.pem is not 3DES"
grep -q -- '-----BEGIN PRIVATE KEY-----' ec-p384.pem || fail "ec-p384.pem key is not PKCS#8"
grep -q -- '-----END' truncated.pem && fail "truncated.pem has an END line"
cmp -s <(openssl x509 -in good.der -inform DER -noout -fingerprint -sha256) \
  <(openssl x509 -in good.pem -noout -fingerprint -sha256) || fail "good.der != good.pem leaf"
cmp -s <(openssl pkey -in mismatch.pem -pubout) <(openssl x509 -in mismatch.pem -noout -pubkey) &&
  fail "mismatch.pem key matches its certificate"
for p in good.pfx:secret good-legacy.pfx:secret:-legacy good-nopass.pfx: \
  cng-software.pfx:secret cng-platform.pfx:secret cng-smartcard.pfx:secret \
  csp-legacy.pfx:secret; do
  IFS=: read -r f pw legacy <<<"$p"
  n=$(openssl pkcs12 -in "$f" -passin "pass:$pw" ${legacy:+"$legacy"} -nodes 2>/dev/null |
    grep -c -- '-----BEGIN CERTIFICATE-----') || true
  [[ $n == 2 ]] || fail "$f: expected 2 certificates, got $n"
done
for f in cng-software cng-platform cng-smartcard csp-legacy; do
  openssl pkcs12 -in "$f.pfx" -passin "pass:$PASS" -info -nocerts -nodes 2>/dev/null |
    grep -q '^ *Microsoft CSP Name: Microsoft ' || fail "$f.pfx has no CSP name attribute"
done
if openssl pkcs12 -in good.pfx -passin pass:wrong -nokeys >/dev/null 2>&1; then
  fail "good.pfx opens with a wrong password"
fi

# Fixtures, not secrets: make them readable like everything else in the repository.
find . -mindepth 1 -maxdepth 1 -type f ! -name make.sh ! -name README.md -exec chmod 644 {} +

# ---------------------------------------------------------------- dates into README.md
nb=$(openssl x509 -in good.pem -noout -startdate | cut -d= -f2)
na=$(openssl x509 -in good.pem -noout -enddate | cut -d= -f2)
nb_s=$(date -u -d "$nb" +%s)
na_s=$(date -u -d "$na" +%s)
rfc() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; } # rfc EPOCH_SECONDS
if [[ -f README.md ]] && grep -q '<!-- dates:begin -->' README.md; then
  {
    echo "<!-- dates:begin -->"
    echo "| field | openssl | RFC 3339 (for \`--at\`) |"
    echo "|---|---|---|"
    echo "| notBefore | \`$nb\` | \`$(rfc "$nb_s")\` |"
    echo "| notAfter | \`$na\` | \`$(rfc "$na_s")\` |"
    echo "| before validity (notBefore − 1 day) | | \`$(rfc $((nb_s - 86400)))\` |"
    echo "| inside validity (notBefore + 1 year) | | \`$(rfc $((nb_s + 365 * 86400)))\` |"
    echo "| after validity (notAfter + 1 day) | | \`$(rfc $((na_s + 86400)))\` |"
    echo "<!-- dates:end -->"
  } >"$TMP/dates.md"
  awk -v block="$TMP/dates.md" '
    /<!-- dates:begin -->/ { while ((getline l < block) > 0) print l; skip = 1; next }
    /<!-- dates:end -->/ { skip = 0; next }
    !skip { print }
  ' README.md >"$TMP/README.md"
  cat "$TMP/README.md" >README.md
fi

say "done: good.pem valid from $nb to $na"
