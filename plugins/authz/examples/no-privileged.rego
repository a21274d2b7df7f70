# Non-admins may create containers, but not with --privileged, --cap-add, the host's
# network, pid or ipc namespaces, bind mounts of host paths, or volumes bound to host
# directories; nor have berthd read or write host paths for them (image save, load and
# import, a bind-type volume), which it does as root; nor manage plugins, which serve every
# caller of the daemon. Admins (data.admins by name, data.admin_groups by group) may. Every
# other call is allowed (combine with other policies in the chain).
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

# The local driver's bind options (`-o type=none -o o=bind -o device=DIR`), on a volume a
# mount makes.
problems contains sprintf("a volume bound to the host's %s", [m.volume_options.device]) if {
	some m in request.mounts
	m.type == "volume"
	is_string(m.volume_options.device)
}

# Calls whose params name a file or directory on berthd's host.
host_path_methods := {"image.save", "image.load", "image.import", "volume.create"}

# Absent params are null.
host_path := input.params.path if {
	input.method in {"image.save", "image.load", "image.import"}
	is_string(input.params.path)
}

host_path := input.params.request.driver_opts.device if {
	input.method == "volume.create"
	is_string(input.params.request.driver_opts.device)
}

# A plugin's settings, grants and state are the daemon's, shared by every caller.
plugin_methods := {"plugin.install", "plugin.set", "plugin.enable", "plugin.disable", "plugin.remove"}

allow if admin

allow if not input.method in (({"container.create"} | host_path_methods) | plugin_methods)

allow if {
	input.method == "container.create"
	count(problems) == 0
}

allow if {
	input.method in host_path_methods
	not host_path
}

reason := sprintf("only admins may create containers with %s", [concat(", ", sort(problems))]) if {
	not allow
	input.method == "container.create"
}

reason := sprintf("only admins may have berthd use the host path %s (%s)", [host_path, input.method]) if {
	not allow
	input.method in host_path_methods
}

reason := sprintf("only admins may manage plugins (%s): they serve every caller", [input.method]) if {
	not allow
	input.method in plugin_methods
}
