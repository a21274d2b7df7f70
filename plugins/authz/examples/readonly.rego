# Read-only users: admins (named in data.admins, or members of a group in data.admin_groups)
# may call anything; everyone else may only read.
package berth.authz

import rego.v1

default allow := false

admin if input.user in data.admins

admin if {
	some group in input.groups
	group in data.admin_groups
}

read_methods := {
	"rpc.discover",
	"system.ping", "system.version", "system.info", "system.df", "system.metrics",
	"container.list", "container.inspect", "container.logs", "container.logs_follow",
	"container.top", "container.stats", "container.port", "container.wait",
	"image.list", "image.inspect", "image.history",
	"volume.list", "volume.inspect",
	"network.list", "network.inspect",
	"plugin.list", "plugin.inspect",
	"events.subscribe",
}

allow if admin

allow if input.method in read_methods

default caller := "anonymous"

caller := input.user if is_string(input.user)

reason := sprintf("%s may only read: %s changes things (ask an admin)", [caller, input.method]) if not allow
