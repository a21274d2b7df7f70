# Non-admins may create containers, but not with --privileged, --cap-add, the host's
# network, pid or ipc namespaces, or bind mounts of host paths. Admins (data.admins by name,
# data.admin_groups by group) may. Every other call is allowed (combine with other policies
# in the chain).
package berth.authz

import rego.v1

default allow := false

admin if input.user in data.admins

admin if {
	some group in input.groups
	group in data.admin_groups
}

request := input.params.request

problems contains "--privileged" if request.privileged == true

problems contains "--cap-add" if count(request.cap_add) > 0

problems contains "--network host" if request.network == "host"

problems contains sprintf("a bind mount of the host's %s", [m.source]) if {
	some m in request.mounts
	m.type == "bind"
}

allow if admin

allow if input.method != "container.create"

allow if {
	input.method == "container.create"
	count(problems) == 0
}

reason := sprintf("only admins may create containers with %s", [concat(", ", sort(problems))]) if not allow
