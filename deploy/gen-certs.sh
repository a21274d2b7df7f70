#!/bin/sh
# Makes a test CA, a server certificate for berthd and client certificates for TLS on
# berthd's TCP listener. Run with -h for the usage.
set -eu
# No globbing: SANs such as DNS:*.example.com are words, not patterns.
set -f

prog=gen-certs.sh

usage() {
    cat <<EOF
Usage: $prog [--san SAN]... [--client NAME]... [--force] [DIR]

Creates in DIR (default ./certs), with EC P-256 keys (PKCS#8 PEM, mode 0600) and
certificates valid for 825 days:

  ca.pem, ca-key.pem                 a CA (CN=berth test CA)
  server-cert.pem, server-key.pem    berthd's certificate (CN=berthd, extendedKeyUsage
                                     serverAuth), with the SANs of --san
  NAME-cert.pem, NAME-key.pem        per --client NAME: a client certificate (CN=NAME,
                                     SAN email:NAME@berth.invalid, extendedKeyUsage
                                     clientAuth)

Options:
  --san SAN      a subjectAltName of the server certificate, as DNS:name or IP:address;
                 repeatable or comma-separated (default: DNS:localhost,IP:127.0.0.1)
  --client NAME  make a client certificate for NAME (letters, digits, '.', '_', '-');
                 repeatable
  --force        replace existing files (otherwise existing files are an error); other
                 files in DIR, such as earlier clients' certificates, are left as they are
                 (and no longer match a new CA)
  -h, --help     show this help

Then, for example:

  berthd --listen tcp://127.0.0.1:2376 --tls-cert DIR/server-cert.pem \\
         --tls-key DIR/server-key.pem --tls-ca DIR/ca.pem
  berth -H tcp://127.0.0.1:2376 --tlscacert DIR/ca.pem \\
        --tlscert DIR/alice-cert.pem --tlskey DIR/alice-key.pem version
  # or: BERTH_CERT_PATH=DIR with ca.pem, cert.pem and key.pem, and BERTH_TLS_VERIFY=1
EOF
}

die() { echo "$prog: $*" >&2; exit 1; }
usage_error() { echo "$prog: $*" >&2; echo "Run '$prog -h' for the usage." >&2; exit 2; }

dir=""
sans=""
clients=""
force=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --san|--client)
            [ $# -ge 2 ] && [ -n "$2" ] || usage_error "$1 needs a value"
            if [ "$1" = --san ]; then
                sans="${sans:+$sans,}$2"
            else
                clients="$clients $2"
            fi
            shift 2 ;;
        --san=*) sans="${sans:+$sans,}${1#--san=}"; shift ;;
        --client=*) clients="$clients ${1#--client=}"; shift ;;
        --force) force=1; shift ;;
        --) shift; [ $# -le 1 ] || usage_error "one DIR only"; [ $# -eq 0 ] || { dir=$1; shift; } ;;
        -*) usage_error "unknown option $1" ;;
        *) [ -z "$dir" ] || usage_error "one DIR only (got $dir and $1)"; dir=$1; shift ;;
    esac
done
[ -n "$dir" ] || dir=./certs
[ -n "$sans" ] || sans="DNS:localhost,IP:127.0.0.1"
command -v openssl >/dev/null 2>&1 || die "openssl is not installed"

# Client names: checked, duplicates dropped, and no clash with the CA's and server's files.
names=""
for c in $clients; do
    case "$c" in
        *[!A-Za-z0-9._-]*|.*) die "invalid client name '$c' (letters, digits, '.', '_', '-'; not starting with '.')" ;;
        ca|server) die "client name '$c' would clash with the $c's files" ;;
    esac
    [ "${#c}" -le 64 ] || die "client name '$c' is longer than 64 characters"
    case " $names " in *" $c "*) ;; *) names="$names $c" ;; esac
done
for s in $(printf '%s\n' "$sans" | tr ',' ' '); do
    case "$s" in
        DNS:?*|IP:?*) ;;
        *) die "invalid --san '$s' (expected DNS:name or IP:address)" ;;
    esac
done

files="ca.pem ca-key.pem server-cert.pem server-key.pem"
for c in $names; do files="$files $c-cert.pem $c-key.pem"; done
if [ "$force" -eq 0 ]; then
    existing=""
    for f in $files; do [ ! -e "$dir/$f" ] || existing="$existing $dir/$f"; done
    [ -z "$existing" ] || die "refusing to overwrite (use --force):$existing"
fi

created=0
[ -d "$dir" ] || created=1
mkdir -p "$dir"
umask 077
# Everything is made here first and moved into DIR at the end: a failure leaves DIR as it was
# (and removes it if this run created it).
tmp=$(mktemp -d "$dir/.gen-certs.XXXXXX")
trap 'rm -rf "$tmp"; [ "$created" -eq 0 ] || rmdir "$dir" 2>/dev/null || true' EXIT
trap 'exit 130' HUP INT TERM

# run CMD...: openssl quietly, its messages shown when it fails.
run() {
    if ! "$@" >"$tmp/log" 2>&1; then
        cat "$tmp/log" >&2
        die "failed: $*"
    fi
}

# A minimal configuration, so that the system's openssl.cnf adds nothing.
cat >"$tmp/req.cnf" <<'EOF'
[req]
distinguished_name = dn
x509_extensions = v3_ca
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

key() { run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/$1"; }

key ca-key.pem
run openssl req -config "$tmp/req.cnf" -x509 -new -key "$tmp/ca-key.pem" -sha256 -days 825 \
    -subj "/CN=berth test CA" -out "$tmp/ca.pem"

# sign NAME SUBJECT EXTENSIONS: NAME-key.pem and NAME-cert.pem signed by the CA.
sign() {
    key "$1-key.pem"
    run openssl req -config "$tmp/req.cnf" -new -key "$tmp/$1-key.pem" -subj "$2" \
        -out "$tmp/$1.csr"
    printf '%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n' "$3" \
        >"$tmp/$1.ext"
    run openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca-key.pem" \
        -CAserial "$tmp/ca.srl" -CAcreateserial -days 825 -sha256 -extfile "$tmp/$1.ext" \
        -out "$tmp/$1-cert.pem"
}

sign server "/CN=berthd" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$sans"
for c in $names; do
    sign "$c" "/CN=$c" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=email:$c@berth.invalid"
done

for f in $files; do
    case "$f" in
        *-key.pem) chmod 0600 "$tmp/$f" ;;
        *) chmod 0644 "$tmp/$f" ;;
    esac
done
for f in $files; do mv -f "$tmp/$f" "$dir/$f"; done
echo "in $dir:"
for f in $files; do echo "  $f"; done
