#!/bin/sh
# Makes a CA, a server certificate for berthd and client certificates, for testing TLS on
# berthd's TCP listener (EC P-256 keys, PKCS#8, 825 days). Usage:
#
#   deploy/gen-certs.sh [--san DNS:host|IP:addr]... [--client NAME]... [--force] [DIR]
#
# DIR (default ./certs) receives ca.pem, ca-key.pem, server-cert.pem, server-key.pem and, per
# client, NAME-cert.pem and NAME-key.pem (subject CN=NAME, SAN email:NAME@berth.invalid).
# The server's SANs default to DNS:localhost,IP:127.0.0.1. Then, for example:
#
#   berthd --listen tcp://127.0.0.1:2376 --tls-cert DIR/server-cert.pem \
#          --tls-key DIR/server-key.pem --tls-ca DIR/ca.pem
#   berth -H tcp://127.0.0.1:2376 --tlscacert DIR/ca.pem \
#         --tlscert DIR/alice-cert.pem --tlskey DIR/alice-key.pem version
set -eu

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

dir=./certs
sans=""
clients=""
force=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --san) sans="${sans:+$sans,}$2"; shift 2 ;;
        --client) clients="$clients $2"; shift 2 ;;
        --force) force=1; shift ;;
        -*) echo "gen-certs.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) dir="$1"; shift ;;
    esac
done
[ -n "$sans" ] || sans="DNS:localhost,IP:127.0.0.1"
mkdir -p "$dir"
if [ "$force" -eq 0 ] && [ -e "$dir/ca.pem" ]; then
    echo "gen-certs.sh: $dir/ca.pem exists (use --force to replace)" >&2
    exit 1
fi
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key "$dir/ca-key.pem"
openssl req -x509 -new -key "$dir/ca-key.pem" -sha256 -days 825 -subj "/CN=berth test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem"

# sign NAME SUBJECT EXTENSIONS
sign() {
    key "$dir/$1-key.pem"
    openssl req -new -key "$dir/$1-key.pem" -subj "$2" -out "$tmp/$1.csr"
    printf '%s\n' "$3" > "$tmp/$1.ext"
    openssl x509 -req -in "$tmp/$1.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
        -CAcreateserial -days 825 -sha256 -extfile "$tmp/$1.ext" -out "$dir/$1-cert.pem" 2>/dev/null
}

sign server "/CN=berthd" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$sans"
for c in $clients; do
    sign "$c" "/CN=$c" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=email:$c@berth.invalid"
done
rm -f "$dir/ca.srl"
chmod 0644 "$dir"/*-cert.pem "$dir/ca.pem"
echo "certificates in $dir:" && ls "$dir"
