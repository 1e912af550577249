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

# real/ holds real public chains copied from elsewhere (see real/README.md): inputs, kept.
find . -mindepth 1 -maxdepth 1 ! -name make.sh ! -name README.md ! -name real -exec rm -rf -- {} +

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
# scrypt as `openssl pkcs8 -scrypt` writes it (N=16384, r=8, p=1: 16 MiB), which the checker reads,
# and two keys whose key derivation asks for more than any tool writes, which it refuses.
openssl pkcs8 -topk8 -in good.key -scrypt -passout "pass:$PASS" -out "$TMP/good.scrypt.key"
cat "$TMP/good.crt" int.pem "$TMP/good.scrypt.key" >good-scrypt.pem
openssl pkcs8 -topk8 -in good.key -v2 aes-256-cbc -iter 2000000 -passout "pass:$PASS" \
  -out "$TMP/costly-pbkdf2.key"
cat "$TMP/good.crt" int.pem "$TMP/costly-pbkdf2.key" >costly-pbkdf2.pem
openssl pkcs8 -topk8 -in good.key -scrypt -scrypt_N 1024 -scrypt_r 8 -scrypt_p 64 \
  -passout "pass:$PASS" -out "$TMP/costly-scrypt.key"
cat "$TMP/good.crt" int.pem "$TMP/costly-scrypt.key" >costly-scrypt.pem
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
p12 costly.pfx "$PASS" -iter 2000000 # twice the checker's cap on key-derivation iterations

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

# ---------------------------------------------------------------- profile (RFC 5280, CA/B Forum)
# One fixture per rule of the checker's `profile` layer (src/cert/profile.rs), each breaking
# exactly one rule of an otherwise good chain. openssl writes any extension raw with
# `OID = [critical,]DER:hex`, which covers what its named syntax refuses (empty sequences,
# mismatched key identifiers), and `openssl ca` sets dates in the past, so no DER is edited.
say "profile: one fixture per RFC 5280 / CA/B Forum rule"

# xext KIND KEY=VALUE... -> an [ext] section: the good leaf's (KIND=leaf) or a CA's (KIND=ca)
# extensions, each KEY replaced by its VALUE ("none" drops OpenSSL's default SKI/AKI, an empty
# VALUE leaves the extension out); other KEYs are appended in order.
xext() {
  local kind=$1 kv k v
  shift
  declare -A e
  local order=(basicConstraints keyUsage subjectKeyIdentifier authorityKeyIdentifier)
  if [[ $kind == leaf ]]; then
    e=([basicConstraints]="critical, CA:FALSE" [keyUsage]="critical, digitalSignature, keyEncipherment"
      [subjectKeyIdentifier]=hash [authorityKeyIdentifier]="keyid:always"
      [subjectAltName]="$SAN1" [extendedKeyUsage]="$EKU")
    order+=(subjectAltName extendedKeyUsage)
  else
    e=([basicConstraints]="critical, CA:TRUE" [keyUsage]="critical, keyCertSign, cRLSign"
      [subjectKeyIdentifier]=hash [authorityKeyIdentifier]="keyid:always")
  fi
  for kv in "$@"; do
    k=${kv%%=*} v=${kv#*=}
    [[ -v e[$k] ]] || order+=("$k")
    e[$k]=$v
  done
  echo "[ext]"
  for k in "${order[@]}"; do
    [[ -n ${e[$k]} ]] && echo "$k = ${e[$k]}"
  done
  return 0
}

# issue_as NAME KEY SUBJECT EXTFILE CA_CERT CA_KEY -> $TMP/NAME.crt (like `issue`, any subject)
issue_as() {
  local name=$1 key=$2 subj=$3 ext=$4 cacert=$5 cakey=$6
  openssl req -new -key "$key" -subj "$subj" -out "$TMP/$name.csr" 2>/dev/null
  openssl x509 -req -in "$TMP/$name.csr" -CA "$cacert" -CAkey "$cakey" \
    -days "$DAYS" -sha256 -extfile "$ext" -extensions ext -out "$TMP/$name.crt" 2>/dev/null
}

# aki_der_for KEY -> a raw authorityKeyIdentifier value (DER:30:16:80:14:<20 bytes>) holding the
# key identifier OpenSSL computes for KEY (SHA-1 of the public key bits).
aki_der_for() {
  printf '[ext]\nsubjectKeyIdentifier = hash\n' >"$TMP/ski-only.ext"
  local ski
  ski=$(openssl req -x509 -new -key "$1" -subj /CN=ski -days 1 -config "$TMP/ski-only.ext" \
    -extensions ext 2>/dev/null | openssl x509 -noout -ext subjectKeyIdentifier | sed -n '2s/ //gp')
  echo "DER:30:16:80:14:$ski"
}

PLEAF_KEY="$TMP/profile-leaf.key"
rsa_key 2048 "$PLEAF_KEY"
LEAF_SUBJ="/O=$ORG/CN=$HOST"

# pleaf NAME SUBJECT KEY=VALUE... -> NAME.pem: leaf (from int.pem, those extensions) + int + key
pleaf() {
  local name=$1 subj=$2
  shift 2
  xext leaf "$@" >"$TMP/$name.ext"
  issue_as "$name" "$PLEAF_KEY" "$subj" "$TMP/$name.ext" int.pem int.key
  cat "$TMP/$name.crt" int.pem "$PLEAF_KEY" >"$name.pem"
}
pleaf profile-leaf-no-aki "$LEAF_SUBJ" authorityKeyIdentifier=none
pleaf profile-leaf-aki-critical "$LEAF_SUBJ" "authorityKeyIdentifier=critical, keyid:always"
pleaf profile-leaf-keycertsign "$LEAF_SUBJ" \
  "keyUsage=critical, digitalSignature, keyEncipherment, keyCertSign"
pleaf profile-leaf-san-critical "$LEAF_SUBJ" "subjectAltName=critical, $SAN1"
pleaf profile-leaf-empty-subject / "subjectAltName=critical, $SAN1" # the good case
pleaf profile-leaf-empty-subject-san-noncritical / "subjectAltName=$SAN1"
pleaf profile-leaf-empty-subject-no-san / subjectAltName=
pleaf profile-leaf-san-underscore "$LEAF_SUBJ" "subjectAltName=$SAN1, DNS:node_2.$DOMAIN"
pleaf profile-leaf-san-empty-label "$LEAF_SUBJ" "subjectAltName=$SAN1, DNS:node2..$DOMAIN"
pleaf profile-leaf-name-constraints "$LEAF_SUBJ" "nameConstraints=critical, permitted;DNS:$DOMAIN"
pleaf profile-leaf-aia-empty "$LEAF_SUBJ" "1.3.6.1.5.5.7.1.1=DER:30:00"
pleaf profile-leaf-aia-malformed "$LEAF_SUBJ" "1.3.6.1.5.5.7.1.1=DER:30:03:02:01:00"
pleaf profile-leaf-unknown-critical "$LEAF_SUBJ" "1.3.6.1.4.1.55555.1=critical, DER:05:00"

# pint NAME KEY=VALUE... -> NAME.pem: leaf + intermediate + key, where the intermediate (under
# ca.pem, pathlen:0 like int.pem) has those extensions and the leaf is good. The leaf's AKI is
# written raw, so it is right even when the intermediate has no SKI.
PINT_KEY="$TMP/profile-int.key"
rsa_key 2048 "$PINT_KEY"
INT_SUBJ="/O=$ORG/CN=Gatehouse Profile Intermediate CA"
pint() {
  local name=$1
  shift
  xext ca "basicConstraints=critical, CA:TRUE, pathlen:0" "$@" >"$TMP/$name-int.ext"
  issue_as "$name-int" "$PINT_KEY" "$INT_SUBJ" "$TMP/$name-int.ext" ca.pem ca.key
  xext leaf "authorityKeyIdentifier=none" "2.5.29.35=$(aki_der_for "$PINT_KEY")" >"$TMP/$name.ext"
  issue_as "$name" "$PLEAF_KEY" "$LEAF_SUBJ" "$TMP/$name.ext" "$TMP/$name-int.crt" "$PINT_KEY"
  cat "$TMP/$name.crt" "$TMP/$name-int.crt" "$PLEAF_KEY" >"$name.pem"
}
pint profile-int-good # the good case
pint profile-int-no-ski subjectKeyIdentifier=none
pint profile-int-ski-critical "subjectKeyIdentifier=critical, hash"
pint profile-int-no-aki authorityKeyIdentifier=none
pint profile-int-aki-issuer "authorityKeyIdentifier=keyid:always, issuer:always"
pint profile-int-bc-noncritical "basicConstraints=CA:TRUE, pathlen:0"
pint profile-int-nc-leading-period "nameConstraints=critical, permitted;DNS:.$DOMAIN"
pint profile-int-nc-empty "2.5.29.30=critical, DER:30:00"
pint profile-int-pc-noncritical "policyConstraints=requireExplicitPolicy:0"

# proot NAME SUBJECT KEY=VALUE... -> NAME-ca.pem, a root with those extensions, and NAME.pem,
# a good leaf issued straight by it + key. Check with `--roots NAME-ca.pem`.
PROOT_KEY="$TMP/profile-root.key"
rsa_key 2048 "$PROOT_KEY"
ROOT_SUBJ="/O=$ORG/CN=Gatehouse Profile Root CA"
proot_leaf() { # proot_leaf NAME -> NAME.pem, the leaf under NAME-ca.pem
  xext leaf >"$TMP/$1.ext"
  issue_as "$1" "$PLEAF_KEY" "$LEAF_SUBJ" "$TMP/$1.ext" "$1-ca.pem" "$PROOT_KEY"
  cat "$TMP/$1.crt" "$PLEAF_KEY" >"$1.pem"
}
proot() {
  local name=$1 subj=$2
  shift 2
  xext ca "$@" >"$TMP/$name-ca.ext"
  openssl req -x509 -new -key "$PROOT_KEY" -subj "$subj" -days "$DAYS" -sha256 \
    -config "$TMP/$name-ca.ext" -extensions ext -out "$name-ca.pem"
  proot_leaf "$name"
}
proot profile-root-good "$ROOT_SUBJ" # the good case
proot profile-root-no-bc "$ROOT_SUBJ" basicConstraints=
proot profile-root-aki-issuer "$ROOT_SUBJ" "authorityKeyIdentifier=keyid:always, issuer:always"
proot profile-root-aki-mismatch "$ROOT_SUBJ" authorityKeyIdentifier=none \
  "2.5.29.35=DER:30:16:80:14:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11:11"
proot profile-root-unknown-critical "$ROOT_SUBJ" "1.3.6.1.4.1.55555.1=critical, DER:05:00"
proot profile-root-empty-subject / # cA=TRUE with an empty subject (so the leaf's issuer is empty)

# A root that expired in 2021 over a current leaf: `openssl ca -selfsign` takes explicit dates.
cat >"$TMP/ca.cnf" <<CNF
[ca]
default_ca = d
[d]
database = $TMP/index.txt
new_certs_dir = $TMP
rand_serial = yes
default_md = sha256
policy = p
preserve = yes
unique_subject = no
email_in_dn = no
[p]
organizationName = optional
commonName = supplied
CNF
: >"$TMP/index.txt"
xext ca >"$TMP/expired-ca.ext"
openssl req -new -key "$PROOT_KEY" -subj "$ROOT_SUBJ" -out "$TMP/expired-ca.csr" 2>/dev/null
openssl ca -batch -config "$TMP/ca.cnf" -selfsign -keyfile "$PROOT_KEY" -in "$TMP/expired-ca.csr" \
  -startdate 20200101000000Z -enddate 20210101000000Z -extfile "$TMP/expired-ca.ext" \
  -extensions ext -notext -out profile-root-expired-ca.pem 2>/dev/null
proot_leaf profile-root-expired

# ---------------------------------------------------------------- chains webpki can't build
say "chains RFC 5280 allows but rustls-webpki refuses"
# A self-issued intermediate (int.pem's own name, a new key, signed by int.key: a key rollover)
# between int.pem (pathlen:0) and the leaf. RFC 5280 6.1.4 doesn't count self-issued
# certificates toward pathLenConstraint, so `openssl verify` accepts the chain; webpki doesn't.
rsa_key 2048 "$TMP/rollover.key"
xext ca >"$TMP/rollover.ext"
issue_as rollover "$TMP/rollover.key" "/O=$ORG/CN=Gatehouse Test Intermediate CA" \
  "$TMP/rollover.ext" int.pem int.key
xext leaf >"$TMP/self-issued.ext"
issue_as self-issued "$PLEAF_KEY" "$LEAF_SUBJ" "$TMP/self-issued.ext" "$TMP/rollover.crt" "$TMP/rollover.key"
cat "$TMP/self-issued.crt" "$TMP/rollover.crt" int.pem "$PLEAF_KEY" >self-issued-intermediate.pem

# An intermediate whose name constraint is a directoryName (O=Gatehouse Test) the leaf's subject
# lies inside; webpki supports only dNSName and iPAddress constraints and refuses the others.
{
  xext ca "basicConstraints=critical, CA:TRUE, pathlen:0" \
    "nameConstraints=critical, permitted;dirName:nc_dir"
  echo "[nc_dir]"
  echo "O = $ORG"
} >"$TMP/nc-dirname-int.ext"
issue_as nc-dirname-int "$PINT_KEY" "$INT_SUBJ" "$TMP/nc-dirname-int.ext" ca.pem ca.key
xext leaf >"$TMP/nc-dirname.ext"
issue_as nc-dirname "$PLEAF_KEY" "$LEAF_SUBJ" "$TMP/nc-dirname.ext" "$TMP/nc-dirname-int.crt" "$PINT_KEY"
cat "$TMP/nc-dirname.crt" "$TMP/nc-dirname-int.crt" "$PLEAF_KEY" >name-constraint-dirname.pem

# ---------------------------------------------------------------- real public chains
say "real public chains (inputs in real/, see real/README.md)"
der_chain() { # der_chain OUT DER... -> OUT: those real/ certificates as PEM, in order
  local out=$1 f
  shift
  : >"$out"
  for f in "$@"; do openssl x509 -inform DER -in "real/$f" >>"$out"; done
}
der_chain real-letsencrypt-org.pem letsencrypt_org_valid_{1,2,3,4}.crt
der_chain real-aws-amazon-com.pem aws_amazon_com_valid_{1,2,3,4}.crt
openssl x509 -in real/isrg-root-x1.pem -out real-isrg-root-x1.pem
openssl x509 -in real/amazon-root-ca-1.pem -out real-amazon-root-ca-1.pem

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

for f in profile-leaf-empty-subject profile-int-good self-issued-intermediate name-constraint-dirname; do
  openssl verify -CAfile ca.pem -untrusted "$f.pem" "$f.pem" >/dev/null ||
    fail "$f.pem does not chain to ca.pem (openssl must accept what RFC 5280 allows)"
done
openssl verify -CAfile profile-root-good-ca.pem profile-root-good.pem >/dev/null ||
  fail "profile-root-good.pem does not chain to its root"
[[ $(openssl x509 -in profile-root-expired-ca.pem -noout -enddate) == *2021* ]] ||
  fail "profile-root-expired-ca.pem did not expire in 2021"
# The real chains at the time rustls-platform-verifier checks them (2026-08-12T10:22:53Z).
openssl verify -attime 1786530173 -CAfile real-isrg-root-x1.pem -untrusted real-letsencrypt-org.pem \
  real-letsencrypt-org.pem >/dev/null || fail "real-letsencrypt-org.pem does not verify"
openssl verify -attime 1786530173 -CAfile real-amazon-root-ca-1.pem -untrusted real-aws-amazon-com.pem \
  real-aws-amazon-com.pem >/dev/null || fail "real-aws-amazon-com.pem does not verify"

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
