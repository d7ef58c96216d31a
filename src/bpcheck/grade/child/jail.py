"""The child's lock-down, run before the submission: namespaces, an init process, an
allow-listed view of the file system, resource limits, the privilege drop and the import
blocker.  Standard library only.

Trusted code, run in this order by :mod:`.main`:

1. :func:`enter`: new mount, PID, network and IPC namespaces, and a user namespace with
   the caller's uid and gid mapped to themselves when the grader is not root (NumPy then
   imports as usual).  The process forks twice: the first copy stays outside as the
   *keeper* (the process the parent started; it waits and passes on the exit status), the
   second is the namespace's *init* (PID 1, ``PR_SET_PDEATHSIG`` = SIGKILL: when the keeper
   is killed, init dies and the kernel kills every process of the namespace), and the
   third, the *worker*, goes on to run the submission.  The submission never runs in a
   process it could use to outlive the keeper.
2. the worker imports NumPy (and SymPy) and the standard-library modules it preloads;
3. :func:`build_view`: a fresh tmpfs becomes the root (``pivot_root``; the host's root is
   detached) holding, read-only, only what the loaded modules need: the standard library
   (its ``site-packages`` covered by an empty folder), the interpreter, the shared
   libraries mapped into the process and the folders they came from when those hold
   libraries only, NumPy, SymPy and mpmath, and the scratch folder with the submission;
   plus a private ``/proc``, a ``/dev`` with ``null``, ``zero``, ``full``, ``random`` and
   ``urandom``, and private ``/tmp`` and ``/dev/shm`` tmpfs of ``tmp_mb`` each.  Nothing
   else of the host exists for the child: not the repository, not the instructor's home,
   not the autodiff libraries, not another Python environment;
4. limits (:func:`_set_limits`) and the privilege drop (:func:`_drop_privileges`): an unused
   uid when the grader is root, else no capabilities left in the user namespace; and
   ``PR_SET_NO_NEW_PRIVS``.

Where the kernel refuses the namespaces (Docker's default seccomp profile, a sysctl), the
child says so in its notes and runs with the limits and the privilege drop only; the
parent still kills every process the child left.
"""

import ctypes
import os
import platform  # (loaded now: after the drop the standard library may be unreadable)
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWIPC = 0x00020000, 0x10000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE = 1024, 2048, 4096, 16384, 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


_WITHOUT = ("without namespaces: the child sees the host's files (only file permissions "
            "protect them) and shares the host's network and System V IPC; the grader still "
            "kills every process it leaves")
_SAME_UID = ("not a security boundary: without namespaces and not run as root, the child has "
             "the grader's uid, so it can signal (kill or stop) the grader and change any "
             "file the grader can, the results path included; grade untrusted work as root "
             "or where the kernel allows namespaces")


def _without(notes):
    notes.append(_WITHOUT)
    if os.geteuid() != 0:
        notes.append(_SAME_UID)


def die_with_parent(parent):
    """Have the kernel SIGKILL this process when its parent ends (``PR_SET_PDEATHSIG``), and
    leave now if the parent, pid ``parent``, has already ended.  The harness calls it first
    thing, for the grader: killed (SIGKILL, no clean-up), the grader takes the keeper with
    it, the keeper the init, and the init every process of the namespace.  A change of
    uid clears the setting, so the worker calls it again after the privilege drop."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "PR_SET_PDEATHSIG")
    if os.getppid() != parent:
        os._exit(70)


def join_cgroup(plan, notes):
    """Move this process (the keeper, before it forks anything) into the memory cgroup the
    parent made for the child, so that every process of the submission is in it and
    their memory together stays within its limit; a note either way.  Returns whether
    this process is in it."""
    folder = plan.get("cgroup")
    if folder is None:
        notes.append(f"memory: no cgroup ({plan.get('cgroup_refused')}); memory_mb bounds each "
                     f"process's address space, so the child's processes together can use up "
                     f"to processes x memory_mb")
        return False
    try:
        with open(os.path.join(folder, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    except OSError as err:
        notes.append(f"memory: the cgroup refused the child ({err.strerror}); memory_mb bounds "
                     f"each process's address space only")
        return False
    notes.append(f"memory: a cgroup holds the child's processes to {plan['cgroup_mb']} MB in "
                 f"all, files in memory and kernel memory included")
    return True


def join_cpu_cgroup(plan, notes, in_memory_cgroup):
    """Move this process (the keeper, before it forks anything) into the cpu cgroup the
    parent made for the child: all its processes together get one CPU at most, and an
    equal share beside other children; a note either way.  Under cgroup v2 the cpu cgroup
    is the memory cgroup itself, which :func:`join_cgroup` joined or not
    (``in_memory_cgroup``)."""
    folder = plan.get("cpu_cgroup")
    why = plan.get("cpu_cgroup_refused")
    if folder is not None and folder == plan.get("cgroup") and not in_memory_cgroup:
        folder, why = None, "the memory cgroup that holds its limit refused the child"
    elif folder is not None and folder != plan.get("cgroup"):
        try:
            with open(os.path.join(folder, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError as err:
            folder, why = None, f"the cgroup refused the child: {err.strerror}"
    if folder is None:
        notes.append(f"cpu: no cgroup ({why}); each process's CPU time is limited, not "
                     f"the child's: children graded at once share the machine unevenly")
        return
    notes.append("cpu: a cgroup gives the child's processes one CPU in all, and an equal "
                 "share beside other children graded at once")


def enter(plan, notes):
    """Enter the namespaces and become the worker under a keeper and an init (see the module
    docstring).  Returns ``True`` in the worker when the namespaces are in place, ``False``
    (nothing changed) when they are not requested or refused.  The keeper and the init
    never return: they exit with the worker's status."""
    if not plan.get("namespaces", True):
        notes.append("namespaces: not requested")
        _without(notes)
        return False
    userns = os.geteuid() != 0
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
    if userns:
        flags |= CLONE_NEWUSER
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        notes.append(f"namespaces: unshare refused ({os.strerror(err)})")
        _without(notes)
        return False
    if userns:  # map the grader's own uid and gid: files keep their owners, NumPy imports
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    alive_r, alive_w = os.pipe()
    child = os.fork()
    if child:  # the keeper, outside the PID namespace: the process the parent started
        os.close(alive_r)
        _let_go(plan)
        _exit_like(_wait_for(child))
    _check(_libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "PR_SET_PDEATHSIG")
    os.close(alive_w)
    import select

    if select.select([alive_r], [], [], 0)[0]:  # the keeper died before PDEATHSIG was set
        os._exit(70)
    worker = os.fork()
    if worker:  # init, PID 1: reap every orphan; leave when the worker does
        _let_go(plan)
        while True:
            pid, status = os.wait()
            if pid == worker:
                _exit_like(status)
    os.close(alive_r)
    notes.append("namespaces: private mount, PID, network and IPC namespaces"
                 + (f" in a user namespace (uid {uid} and gid {gid} mapped to themselves)"
                    if userns else "")
                 + f"; the child runs as PID {os.getpid()} under its own init, and every "
                 "process of the namespace ends with it")
    notes.append("network: none (new network namespace, no interfaces up)")
    return True


def _let_go(plan):
    """In the keeper and the init: hold none of the worker's channels, nor the students'
    output (standard output and error), so that each ends when the worker's processes let
    go of it (the parent waits for the students' output to close before hidden tests)."""
    for key in ("result_fd", "command_fd", "hidden_output_fd"):
        if plan.get(key) is not None:
            try:
                os.close(plan[key])
            except OSError:
                pass
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def _wait_for(pid):
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:  # pragma: no cover
            continue


def _exit_like(status):
    """Leave as a process that ended with wait ``status`` did (killed by the same signal)."""
    import signal

    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
    elif os.WEXITSTATUS(status) > 128 and os.getpid() != 1:
        sig = os.WEXITSTATUS(status) - 128  # init's report of a signal (init cannot die of one)
    else:
        os._exit(os.WEXITSTATUS(status))
    if os.getpid() == 1:
        os._exit(128 + sig)
    try:
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    except (OSError, ValueError):
        pass
    os._exit(128 + sig)


def _mapped_files():
    """Files mapped into this process (the interpreter, its shared libraries, NumPy's)."""
    out = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                path = parts[5].strip()
                if not path.endswith(" (deleted)") and os.path.isfile(path):
                    out.add(os.path.realpath(path))
    return out


def _is_library_folder(folder):
    """``/lib/x86_64-linux-gnu``, ``/usr/lib64`` and the like: folders of shared libraries
    only (``/usr/lib`` itself is not one: it holds ``python3/dist-packages``)."""
    import re

    return re.fullmatch(r"/(usr/)?lib(32|64)?/[a-z0-9_]+-linux-gnu[a-z0-9_]*|/(usr/)?lib64",
                        folder) is not None


def _view(plan):
    """``[(kind, path)]``: what the child's root holds; ``kind`` is ``bind`` (read-only),
    ``cover`` (an empty read-only folder over a bound one) or ``tmpfs`` (private, writable)."""
    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    binds = {stdlib, os.path.realpath(plan["exe"]), plan["box"],
             *(os.path.realpath(p) for p in plan["allowed"])}
    for extra in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(extra):
            binds.add(os.path.realpath(extra))
    for path in _mapped_files():
        folder = os.path.dirname(path)
        binds.add(folder if _is_library_folder(folder) else path)
    binds = {p for p in binds if not any(p.startswith(q + "/") for q in binds if q != p)}
    covers = {os.path.join(stdlib, name) for name in ("site-packages", "dist-packages")}
    covers |= {os.path.realpath(p) for p in plan["hide"]}
    covers = {p for p in covers if os.path.exists(p) and any(p.startswith(q + "/") for q in binds)}
    return sorted([("bind", p) for p in binds] + [("cover", p) for p in covers]
                  + [("tmpfs", "/tmp"), ("tmpfs", "/dev/shm")], key=lambda op: op[1])


def _mount(src, target, fstype, flags, data=None):
    _check(_libc.mount(src and src.encode(), target.encode(), fstype and fstype.encode(), flags,
                       data and data.encode()), f"mount {target}")


def _locked_flags(path):
    """The flags of the mount that holds ``path``, which a read-only remount must keep."""
    f = os.statvfs(path).f_flag
    flags = f & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    return flags | (MS_RELATIME if f & 4096 else 0)


def _cap_ipc(plan, notes):
    """System V IPC is not in the address space: cap it, in this IPC namespace only.
    Shared memory to ``memory_mb`` in all and 16 segments; semaphores to 16 sets of at
    most 64 (1024 in all) and message queues to 16 of 16 kB, where the kernel's defaults
    for a new namespace allow 32000 sets of 32000 semaphores (a submission took 4.5 GB of
    kernel memory in 6 s) and 32000 queues."""
    mb = int(plan["memory_mb"])
    try:
        for name, value in (("shmmax", mb << 20), ("shmall", mb << 8), ("shmmni", 16),
                            ("sem", "64 1024 32 16"),  # per set, in all, per semop, sets
                            ("msgmni", 16), ("msgmnb", 16384), ("msgmax", 8192)):
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write(str(value))
    except OSError as err:
        notes.append(f"ipc: System V IPC not capped ({err.strerror}); it ends with the child")


TMP_INODES = 4096
"""Files (and folders, links) in each private tmpfs, ``/tmp`` and ``/dev/shm``.  Its
``size=`` bounds the data only: without ``nr_inodes`` the kernel allows about a quarter
of the machine's memory in inodes, and user extended attributes (Linux 6.6 and later,
where they are charged to the same inode space, 1 kB an inode) took 12 GB of kernel
memory in 11 s; with it, at most 4 MB of either."""


def build_view(plan, notes):
    """Make a fresh tmpfs at ``plan["root"]`` the root of the mount namespace, holding only
    the allow-listed paths (see the module docstring); returns the scratch folder, or
    ``None`` when a step is refused (the notes say which; the child then keeps the host's
    view, and the parent reports the paths it could read)."""
    root = plan["root"]
    tmp_mb = int(plan["tmp_mb"])
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        readonly = []
        for kind, path in _view(plan):
            target = root + path
            if kind == "cover" and not os.path.isdir(path):  # a file: /dev/null over it
                kind, path = "bind", "/dev/null"
            if kind == "bind" and not os.path.isdir(path):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if not os.path.exists(target):
                    open(target, "w").close()
            else:
                os.makedirs(target, exist_ok=True)
            if kind == "bind":
                _mount(path, target, None, MS_BIND)
                readonly.append((target, _locked_flags(path)))
            elif kind == "cover":
                _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=4k,mode=755")
                readonly.append((target, MS_NOSUID | MS_NODEV))
            else:
                _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
                       f"size={tmp_mb}m,nr_inodes={TMP_INODES},mode=1777")
        for link in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):  # merged-/usr links
            if os.path.islink(link) and not os.path.lexists(root + link):
                os.symlink(os.readlink(link), root + link)
        os.makedirs(root + "/dev", exist_ok=True)
        _mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
        for name in ("null", "zero", "full", "random", "urandom"):
            open(f"{root}/dev/{name}", "w").close()
            _mount(f"/dev/{name}", f"{root}/dev/{name}", None, MS_BIND)
        os.makedirs(root + "/dev/shm")
        _mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={tmp_mb}m,nr_inodes={TMP_INODES},mode=1777")
        _cap_ipc(plan, notes)
        os.makedirs(root + "/proc", exist_ok=True)
        if _libc.mount(b"proc", (root + "/proc").encode(), b"proc",
                       MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
            notes.append(f"mounts: no /proc ({os.strerror(ctypes.get_errno())})")
        for target, flags in readonly:
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        os.chdir(root)
        number = _SYS_PIVOT_ROOT.get(platform.machine())
        if number is not None and _libc.syscall(number, b".", b".") == 0:
            _check(_libc.umount2(b".", MNT_DETACH), "detach the host's root")
            os.chdir("/")
            how = "pivot_root, the host's root detached"
        else:
            os.chroot(root)
            os.chdir("/")
            how = "chroot (pivot_root refused)"
        _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        work = "/tmp/work"
        os.mkdir(work, 0o700)
        if plan.get("uid") is not None and os.geteuid() == 0:
            os.chown(work, plan["uid"], plan["uid"])
    except OSError as err:
        notes.append(f"mounts: stopped early ({err}); the child keeps the host's file system "
                     "view")
        return None
    notes.append(f"files: an allow-listed, read-only view ({how}): the standard library, the "
                 "interpreter and its shared libraries, the libraries the homework allows "
                 f"(and those they need) and the submission; private /tmp and /dev/shm of "
                 f"{tmp_mb} MB each; nothing else of the host")
    return work


def _no_new_privileges():
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")


def _drop_capabilities():
    """Empty the effective, permitted and inheritable capability sets (``capset``)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    _check(_libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "capset")


def _drop_privileges(plan, notes, userns=False):
    if os.geteuid() != 0 or userns:
        if userns:
            _drop_capabilities()
            _no_new_privileges()
            notes.append(f"user: uid {os.getuid()}, no capabilities left in its user namespace")
        else:
            _no_new_privileges()
            notes.append(f"user: runs as uid {os.getuid()} (grader not root, no drop)")
        return
    uid = plan.get("uid")
    if uid is None:
        notes.append("user: root (privilege drop disabled by the config)")
        return
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _no_new_privileges()
    if os.geteuid() == 0 or os.getuid() == 0:  # pragma: no cover - the kernel guarantees it
        raise SystemExit("harness: could not drop root")
    notes.append(f"user: unprivileged uid {uid} (dropped from root before the submission ran)")


# seccomp: the audit architecture and the numbers of unshare, clone, clone3, add_key,
# request_key and keyctl, per machine
_SECCOMP_SYSCALLS = {"x86_64": (0xC000003E, 272, 56, 435, 248, 249, 250),
                     "aarch64": (0xC00000B7, 97, 220, 435, 217, 218, 219)}
_X32 = 0x40000000  # x86-64: syscall numbers of the x32 ABI have this bit set


def leave_session_keyring(notes):
    """Join a new, empty, anonymous session keyring (``KEYCTL_JOIN_SESSION_KEYRING``): a
    change of uid keeps the grader's, which the submission read and wrote (a key planted
    in a test, under ``pam_keyinit``, stayed in the instructor's session).  Before
    :func:`forbid_user_namespaces`, which closes ``keyctl``."""
    numbers = _SECCOMP_SYSCALLS.get(platform.machine())
    if numbers is None:
        notes.append(f"keyrings: the grader's session keyring is kept (no keyctl number for "
                     f"{platform.machine()})")
        return
    if _libc.syscall(ctypes.c_long(numbers[6]), ctypes.c_long(1), None) < 0:
        notes.append(f"keyrings: the grader's session keyring is kept (keyctl refused: "
                     f"{os.strerror(ctypes.get_errno())})")


def forbid_user_namespaces(notes):
    """A seccomp filter for this process and every one it starts: ``unshare`` and ``clone``
    with ``CLONE_NEWUSER`` fail with ``EPERM``, and ``clone3`` (whose flags a filter cannot
    read) with ``ENOSYS``, which makes the C library fall back to ``clone``.  In a user
    namespace of its own a submission could make network namespaces, whose kernel memory
    is only partly charged to the memory cgroup (a child held twice its limit), and IPC
    namespaces without the System V caps.  The kernel's key management (``add_key``,
    ``request_key``, ``keyctl``) fails with ``EPERM``: keyrings are not namespaced, and a
    uid's keyring outlives its processes (a submission left the inputs of hidden tests
    there for the next submission graded with the same uid).  System calls of another ABI
    (x86-64's i386 ``int 0x80`` and x32; a submission made a user namespace through the
    first) fail with ``ENOSYS``."""
    numbers = _SECCOMP_SYSCALLS.get(platform.machine())
    if numbers is None:
        notes.append(f"user namespaces: not forbidden (no seccomp filter for "
                     f"{platform.machine()})")
        return
    arch, unshare, clone, clone3, add_key, request_key, keyctl = numbers
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06  # LD|W|ABS, JMP|JEQ|K, JGE, JSET
    ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    program = [
        (LD, 0, 0, 4),                     # the architecture
        (JEQ, 1, 0, arch),
        (RET, 0, 0, ENOSYS),               # another ABI (i386 on x86-64)
        (LD, 0, 0, 0),                     # the syscall number
        (JGE, 0, 1, _X32),
        (RET, 0, 0, ENOSYS),               # x32
        (JEQ, 0, 1, clone3),
        (RET, 0, 0, ENOSYS),
        (JEQ, 2, 0, add_key),
        (JEQ, 1, 0, request_key),
        (JEQ, 0, 1, keyctl),
        (RET, 0, 0, EPERM),
        (JEQ, 1, 0, unshare),
        (JEQ, 0, 3, clone),
        (LD, 0, 0, 16),                    # the first argument (its low 32 bits): the flags
        (JSET, 0, 1, CLONE_NEWUSER),
        (RET, 0, 0, EPERM),
        (RET, 0, 0, ALLOW),
    ]
    code = b"".join(struct.pack("=HBBI", *ins) for ins in program)
    buffer = ctypes.create_string_buffer(code, len(code))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Program(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    if _libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
        notes.append(f"user namespaces: not forbidden (seccomp refused: "
                     f"{os.strerror(ctypes.get_errno())})")
        return
    notes.append("user namespaces: the submission cannot make any (seccomp)")


def _report_exposed(plan, notes):
    """Without the mounts, name each hidden path the submission's uid could still read.

    Run after the privilege drop, so ``os.access`` answers for the uid the submission gets.
    Nothing is hidden then except by file permissions: the Gradescope ``setup.sh`` removes
    other users' access to bpcheck, the libraries and the config for this case.
    """
    import os

    stdlib = os.path.dirname(os.__file__)
    if not os.access(stdlib, os.R_OK | os.X_OK):
        notes.append(f"stdlib: {stdlib} is not readable by the submission's uid; it can import "
                     "only the modules loaded before the drop (install Python where all users "
                     "can read it)")
    for p in plan["hide"]:
        if not os.path.exists(p):
            continue
        need = os.R_OK | os.X_OK if os.path.isdir(p) else os.R_OK
        if os.access(p, need):
            notes.append(f"exposed: {p} is readable by the submission (not hidden by a mount); "
                         "remove other users' access to it (chmod -R o-rwx)")


def _mapped_mb() -> int:
    """This process's address space now, in MB (0 where ``/proc`` cannot say)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) >> 10
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _set_limits(plan, notes):
    import resource

    mb = 1 << 20
    held = _mapped_mb()  # the interpreter, numpy and the allowed frameworks, loaded now
    space = (held + plan["memory_mb"]) * mb
    limits = [
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_AS", space, space),
        ("RLIMIT_CPU", plan["cpu_s"], plan["cpu_s"] + 1),
        ("RLIMIT_FSIZE", plan["file_mb"] * mb, plan["file_mb"] * mb),
        ("RLIMIT_NPROC", plan["nproc"], plan["nproc"]),
        # memory that the address space does not count (memfd, pipes) needs descriptors
        ("RLIMIT_NOFILE", 64, 64),
    ]
    for name, soft, hard in limits:
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (ValueError, OSError) as err:
            notes.append(f"limits: {name} not set ({err})")
    notes.append(f"limits: memory {plan['memory_mb']} MB (address space beyond the {held} MB "
                 f"held before the submission ran), CPU {plan['cpu_s']} s, "
                 f"files {plan['file_mb']} MB, processes {plan['nproc']}")


class _Blocker:
    """A meta-path finder that refuses the forbidden libraries and remembers the attempt.

    Defence in depth only: a submission can remove it.  What holds is that the libraries
    are absent from the child's file system view (:func:`build_view`) and from
    ``sys.path``; the source is also scanned before it runs.
    """

    def __init__(self, forbidden, allowed="numpy and the standard library only"):
        self.forbidden = tuple(forbidden)
        self.allowed = allowed
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in self.forbidden:
            if top not in self.attempts:
                self.attempts.append(top)
            raise ImportError(f"{top} is not allowed in submissions ({self.allowed})",
                              name=name)

    find_module = None
