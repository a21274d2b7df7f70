# Per-team ownership: a container, volume or network belongs to the team in its `team`
# label. Non-admins may act on and use only objects of their own teams (one of their groups),
# must label what they create with one of their teams, may not prune (it would reach other
# teams' objects), and see only their teams' objects in lists and events. Admins
# (data.admins by name, data.admin_groups by group) do and see everything. Other kinds
# (images, plugins, the daemon) are left to other policies of the chain.
package berth.authz

import rego.v1

default allow := false

admin if input.user in data.admins

admin if {
	some group in input.groups
	group in data.admin_groups
}

ours(labels) if labels.team in input.groups

verb := split(input.method, ".")[1]

# Written for speed as well as clarity, since it runs on every call: the bodies most calls
# satisfy come first (every body gives `true`, so regorus stops at the first that holds), the
# admin check last, and sets are written out where they are used (a literal costs less than
# a call to a rule holding it, or a builtin such as the `split` behind `verb`). Lists come
# first: a list call also evaluates `list_scope`, so it is the one whose time counts most.

# Lists of the team kinds are narrowed by `list_scope` below.
allow if input.method in {"container.list", "volume.list", "network.list"}

allow if not input.target.kind in {"container", "volume", "network"}

allow if {
	input.target.kind in {"container", "volume", "network"}
	not verb in {"list", "prune"}
	ours(input.target.labels)
}

allow if admin

# A call that uses another object than the one it acts on (a new container mounting a named
# volume or joining a network, a network connecting a container) is also put to the policy
# with that object as its target: the same rules then say whether it is the caller's.
used_object if not startswith(input.method, concat("", [input.target.kind, "."]))

# Creating an object that exists (a volume) is judged on that object.
new_object if {
	verb == "create"
	input.target.id == null
}

reason := sprintf("%s needs a `team` label naming one of your groups %v", [input.method, input.groups]) if {
	not allow
	new_object
	not used_object
}

reason := sprintf("%s: only admins may prune", [input.method]) if {
	not allow
	verb == "prune"
}

reason := sprintf("%s %s belongs to another team", [input.target.kind, object_name]) if {
	not allow
	verb != "prune"
	not new_object
	not used_object
}

reason := sprintf("%s %s belongs to another team", [input.target.kind, object_name]) if {
	not allow
	used_object
	input.target.id != null
}

reason := sprintf("%s uses %s %s, which does not exist: create it with a `team` label naming one of your groups first", [input.method, input.target.kind, object_name]) if {
	not allow
	used_object
	input.target.id == null
}

default object_name := "(unknown)"

object_name := input.target.name if is_string(input.target.name)

# What a list shows, as conditions on labels that berthd checks itself: one call decides
# the list, and no rule runs per object. Admins and lists of other kinds: everything. The
# event stream mixes kinds, so for non-admins no label condition fits it: the scope is left
# undefined there, and `visible` below judges the object of each event. An `else` chain,
# because its values differ: evaluation stops at the first that holds.
list_scope := {} if admin
else := {"team": input.groups} if input.target.kind in {"container", "volume", "network"}
else := {} if input.method != "events.subscribe"

# The same, object by object: what a berthd or plugin host without list scopes (berth:authz
# 1.0.0) asks through `filter`.
visible contains i if {
	admin
	some i, _ in input.candidates
}

visible contains i if {
	some i, c in input.candidates
	not c.kind in {"container", "volume", "network"}
}

visible contains i if {
	some i, c in input.candidates
	c.kind in {"container", "volume", "network"}
	ours(c.labels)
}
