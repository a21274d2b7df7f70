# Images come only from the registries in data.registries (host[:port], `docker.io` for
# Docker Hub): pulls, and containers created from a reference that names a registry. A
# reference without a registry part (`busybox`, `library/busybox`) is Docker Hub's.
# Containers made from an image already present by id are allowed. Images made from files
# (`image.import`, `image.load`) came from no registry, and could carry the name of an
# allowed one: they are refused.
package berth.authz

import rego.v1

default allow := false

registry_of(ref) := host if {
	parts := split(ref, "/")
	count(parts) > 1
	host := parts[0]
	is_registry_host(host)
}

registry_of(ref) := "docker.io" if {
	parts := split(ref, "/")
	not has_registry_host(parts)
}

has_registry_host(parts) if {
	count(parts) > 1
	is_registry_host(parts[0])
}

is_registry_host(host) if contains(host, ".")

is_registry_host(host) if contains(host, ":")

is_registry_host(host) if host == "localhost"

reference := input.params.request.reference if input.method in {"image.pull", "image.pull_follow"}

reference := input.params.request.image if input.method == "container.create"

by_id if startswith(reference, "sha256:")

checked if input.method in {"image.pull", "image.pull_follow", "container.create"}

from_files if input.method in {"image.import", "image.load"}

allow if {
	not checked
	not from_files
}

allow if by_id

allow if {
	checked
	registry_of(reference) in data.registries
}

reason := sprintf("%s is not an allowed registry (allowed: %s)", [registry_of(reference), concat(", ", sort(data.registries))]) if {
	not allow
	checked
}

reason := sprintf("%s makes an image that comes from no allowed registry", [input.method]) if from_files
