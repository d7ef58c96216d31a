"""The child's lock-down, run before the submission: namespaces and mounts, resource
limits, the privilege drop, and the import blocker.  Standard library only.

Trusted code, run in this order by :mod:`.main`: isolate (new network and mount
namespaces where the kernel allows it, a small tmpfs over ``/tmp``, ``/var/tmp`` and
``/dev/shm`` with the scratch folder bound back read-only, empty mounts over bpcheck and
the forbidden libraries, ``/dev/null`` over the instructor's config); install the import
blocker; set resource limits (address space, CPU time, processes, file size); drop to an
unprivileged uid when started as root (irreversible).
"""


def _setup_isolation(plan, notes):
    """Namespaces and mounts; best effort, each refusal recorded in ``notes``."""
    import ctypes
    import os
    import stat

    if not plan.get("namespaces", True):
        notes.append("namespaces: not requested")
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUSER = 0x00020000, 0x40000000, 0x10000000
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
    MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18

    flags = CLONE_NEWNS | CLONE_NEWNET
    if os.geteuid() != 0:
        flags |= CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        notes.append(f"namespaces: unshare refused ({os.strerror(err)}); "
                     "the child keeps the host's network and file system view")
        return None
    notes.append("network: none (new network namespace, no interfaces up)")

    def mount(src, target, fstype, mflags, data=None):
        r = libc.mount(src and src.encode(), target.encode(), fstype and fstype.encode(),
                       mflags, data and data.encode())
        if r != 0:
            raise OSError(ctypes.get_errno(), f"mount {target}")

    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as err:
        notes.append(f"mounts: not private ({err}); file system view unchanged")
        return None

    keep = [os.path.realpath(p) for p in plan["keep"] if os.path.exists(p)]

    def cover(directory, size_mb, mode):
        """A fresh tmpfs over ``directory``; the kept paths under it are bound back."""
        directory = os.path.realpath(directory)
        if not os.path.isdir(directory):
            return False
        inside = sorted({p for p in keep if p.startswith(directory + "/")})
        # keep only the outermost kept paths
        inside = [p for p in inside if not any(p.startswith(q + "/") for q in inside if q != p)]
        fds = [(p, os.open(p, os.O_PATH)) for p in inside]
        mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={int(size_mb)}m,mode={mode:o}")
        for p, fd in fds:
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(p, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                open(p, "wb").close()
            mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
            os.close(fd)
        return True

    try:
        # Paths the interpreter needs but that another uid could not traverse (pyenv
        # under /root, say): cover the closed folder and bind back only what is needed.
        closed = []
        for p in keep:
            parts = p.split("/")
            for i in range(2, len(parts)):
                a = "/".join(parts[:i])
                if a and not (os.stat(a).st_mode & stat.S_IXOTH) and a not in closed:
                    closed.append(a)
        for a in closed:
            cover(a, 1, 0o755)
            notes.append(f"mounts: {a} replaced by an empty folder, interpreter bound back")
        tmp_mb = plan["tmp_mb"]
        for d in ("/tmp", "/var/tmp", "/dev/shm"):
            if cover(d, tmp_mb, 0o1777):
                notes.append(f"mounts: {d} is a private {tmp_mb} MB tmpfs")
        for p in plan["hide"]:
            if os.path.isdir(p):
                mount("tmpfs", p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1k,mode=0")
            elif os.path.exists(p):
                mount("/dev/null", p, None, MS_BIND)
            else:
                continue
            notes.append(f"mounts: hidden {p}")
        box = plan["box"]
        try:
            mount(None, box, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        except OSError:
            pass
        work = "/tmp/work"
        os.makedirs(work, exist_ok=True)
        os.chmod(work, 0o700)
        if plan.get("uid") is not None and os.geteuid() == 0:
            os.chown(work, plan["uid"], plan["uid"])
        return work
    except OSError as err:
        notes.append(f"mounts: stopped early ({err})")
        return None


def _drop_privileges(plan, notes):
    import os

    if os.geteuid() != 0:
        notes.append(f"user: runs as uid {os.getuid()} (grader not root, no drop)")
        return
    uid = plan.get("uid")
    if uid is None:
        notes.append("user: root (privilege drop disabled by the config)")
        return
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:  # pragma: no cover - the kernel guarantees it
        raise SystemExit("harness: could not drop root")
    notes.append(f"user: unprivileged uid {uid} (dropped from root before the submission ran)")


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


def _set_limits(plan, notes):
    import resource

    mb = 1 << 20
    limits = [
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_AS", plan["memory_mb"] * mb, plan["memory_mb"] * mb),
        ("RLIMIT_CPU", plan["cpu_s"], plan["cpu_s"] + 1),
        ("RLIMIT_FSIZE", plan["file_mb"] * mb, plan["file_mb"] * mb),
        ("RLIMIT_NPROC", plan["nproc"], plan["nproc"]),
    ]
    for name, soft, hard in limits:
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (ValueError, OSError) as err:
            notes.append(f"limits: {name} not set ({err})")
    notes.append(f"limits: memory {plan['memory_mb']} MB, CPU {plan['cpu_s']} s, "
                 f"files {plan['file_mb']} MB, processes {plan['nproc']}")


class _Blocker:
    """A meta-path finder that refuses the forbidden libraries and remembers the attempt.

    A hostile submission can remove it; that is why the libraries are also hidden by
    mounts, absent from ``sys.path``, and the source is scanned before it runs.
    """

    def __init__(self, forbidden):
        self.forbidden = tuple(forbidden)
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in self.forbidden:
            if top not in self.attempts:
                self.attempts.append(top)
            raise ImportError(f"{top} is not allowed in submissions (numpy, sympy and the "
                              "standard library only)", name=name)

    find_module = None
