//! The default seccomp filter: the system calls docker's default profile refuses, refused
//! with EPERM unless the container holds the capability that makes the call legitimate
//! (as docker does for `--cap-add SYS_ADMIN` and friends); namespace-creating `clone`
//! flags refused, `clone3` answered with ENOSYS so libc falls back to `clone`, and only
//! the `personality` values docker allows. seccompiler compiles the BPF; the init installs
//! it itself, while still privileged, so that `no_new_privs` stays the user's choice.

use std::collections::BTreeMap;

use caps::{Capability, CapsHashSet};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Calls refused to every container, and the capability (if any) that lifts the refusal.
const BLOCKED: &[(libc::c_long, Option<Capability>)] = &[
    (libc::SYS_acct, Some(Capability::CAP_SYS_PACCT)),
    (libc::SYS_add_key, None),
    (libc::SYS_bpf, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_clock_adjtime, Some(Capability::CAP_SYS_TIME)),
    (libc::SYS_clock_settime, Some(Capability::CAP_SYS_TIME)),
    (libc::SYS_delete_module, Some(Capability::CAP_SYS_MODULE)),
    (libc::SYS_finit_module, Some(Capability::CAP_SYS_MODULE)),
    (libc::SYS_init_module, Some(Capability::CAP_SYS_MODULE)),
    (libc::SYS_fanotify_init, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_fsconfig, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_fsmount, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_fsopen, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_fspick, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_get_mempolicy, Some(Capability::CAP_SYS_NICE)),
    (libc::SYS_io_uring_enter, None),
    (libc::SYS_io_uring_register, None),
    (libc::SYS_io_uring_setup, None),
    (libc::SYS_kcmp, Some(Capability::CAP_SYS_PTRACE)),
    (libc::SYS_kexec_file_load, Some(Capability::CAP_SYS_BOOT)),
    (libc::SYS_kexec_load, Some(Capability::CAP_SYS_BOOT)),
    (libc::SYS_keyctl, None),
    (libc::SYS_lookup_dcookie, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_mbind, Some(Capability::CAP_SYS_NICE)),
    (libc::SYS_mount, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_mount_setattr, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_move_mount, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_move_pages, Some(Capability::CAP_SYS_NICE)),
    (
        libc::SYS_name_to_handle_at,
        Some(Capability::CAP_DAC_READ_SEARCH),
    ),
    (
        libc::SYS_open_by_handle_at,
        Some(Capability::CAP_DAC_READ_SEARCH),
    ),
    (libc::SYS_open_tree, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_perf_event_open, Some(Capability::CAP_PERFMON)),
    (libc::SYS_pivot_root, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_process_vm_readv, Some(Capability::CAP_SYS_PTRACE)),
    (
        libc::SYS_process_vm_writev,
        Some(Capability::CAP_SYS_PTRACE),
    ),
    (libc::SYS_quotactl, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_reboot, Some(Capability::CAP_SYS_BOOT)),
    (libc::SYS_request_key, None),
    (libc::SYS_set_mempolicy, Some(Capability::CAP_SYS_NICE)),
    (libc::SYS_setns, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_settimeofday, Some(Capability::CAP_SYS_TIME)),
    (libc::SYS_swapoff, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_swapon, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_syslog, Some(Capability::CAP_SYSLOG)),
    (libc::SYS_umount2, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_unshare, Some(Capability::CAP_SYS_ADMIN)),
    (libc::SYS_userfaultfd, None),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_ioperm, Some(Capability::CAP_SYS_RAWIO)),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_iopl, Some(Capability::CAP_SYS_RAWIO)),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_nfsservctl, None),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS__sysctl, None),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_sysfs, None),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_uselib, None),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_ustat, None),
];

/// `clone` flags that create namespaces: refused without CAP_SYS_ADMIN.
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// `personality(2)` values docker allows: Linux, 32-bit Linux, UNAME26 variants, query.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| format!("no seccomp support for {}", std::env::consts::ARCH))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch()?)
        .map_err(|e| format!("build the seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("compile the seccomp filter: {e}"))
}

fn condition(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| format!("seccomp condition: {e}"))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| format!("seccomp rule: {e}"))
}

/// The default filters for a container whose bounding set is `capabilities`, in the order
/// they are to be installed.
pub fn default_filters(capabilities: &CapsHashSet) -> Result<Vec<BpfProgram>, String> {
    let has = |c: &Capability| capabilities.contains(c);
    let sys_admin = has(&Capability::CAP_SYS_ADMIN);
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (call, lifted_by) in BLOCKED {
        let lifted = match lifted_by {
            // perf_event_open predates CAP_PERFMON: SYS_ADMIN lifts it too.
            Some(Capability::CAP_PERFMON) => has(&Capability::CAP_PERFMON) || sys_admin,
            Some(cap) => has(cap),
            None => false,
        };
        if !lifted {
            refused.insert(*call, Vec::new());
        }
    }
    if !sys_admin {
        let flags = NAMESPACE_FLAGS
            .iter()
            .map(|&flag| {
                let flag = flag as u64;
                rule(vec![condition(0, SeccompCmpOp::MaskedEq(flag), flag)?])
            })
            .collect::<Result<Vec<_>, _>>()?;
        refused.insert(libc::SYS_clone, flags);
    }
    let other_personality = PERSONALITIES
        .iter()
        .map(|&p| condition(0, SeccompCmpOp::Ne, p))
        .collect::<Result<Vec<_>, _>>()?;
    refused.insert(libc::SYS_personality, vec![rule(other_personality)?]);

    let mut programs = vec![compile(refused, SeccompAction::Errno(libc::EPERM as u32))?];
    if !sys_admin {
        // clone3 passes its flags in memory, out of a filter's reach: pretend it does not
        // exist, as docker does, and libc uses clone.
        let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
        programs.push(compile(clone3, SeccompAction::Errno(libc::ENOSYS as u32))?);
    }
    Ok(programs)
}

/// Installs `program` on the calling thread. Without `no_new_privs` this needs
/// CAP_SYS_ADMIN, so the init calls it before it drops its capabilities.
pub fn install(program: &BpfProgram) -> Result<(), std::io::Error> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const seccompiler::sock_filter,
    }
    let prog = SockFprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr(),
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads `prog` and the instructions it points
    // at, both alive for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_with_and_without_sys_admin() {
        let none = default_filters(&CapsHashSet::new()).unwrap();
        assert_eq!(none.len(), 2);
        let admin = default_filters(&CapsHashSet::from([Capability::CAP_SYS_ADMIN])).unwrap();
        // No clone3 filter, and a shorter main one (mount, unshare, ... allowed).
        assert_eq!(admin.len(), 1);
        assert!(admin[0].len() < none[0].len());
    }
}
