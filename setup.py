"""The one compiled part: the jobs' init and its zygote, a small C program (jobmgr/worker/_pid1.c
with the init's watch over the running job in _pid1_supervise.c, the job's view in _sandbox.c (its
skeleton, /dev, /proc and /sys in _skeleton.c, the mount API in _mountapi.c),
its privileges in _privilege.c, the launcher's messages in _order.c), linked with libseccomp.

It is a program, not an extension module: forked from a program that maps little, a job's
slot copies a few page tables, not the launcher's whole Python heap (see _pid1.c). setuptools
builds C only as extension modules, so build_ext is taught to link this one as an executable
named like the module, without a suffix; wheels and editable installs then carry it as they
would an extension.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext

WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers"]
SOURCES = [
    "_pid1.c",
    "_pid1_supervise.c",
    "_order.c",
    "_sandbox.c",
    "_skeleton.c",
    "_mountapi.c",
    "_privilege.c",
]
LIBSECCOMP_MISSING = """\
jobmgr needs libseccomp's headers and library to build its init (every job gets a seccomp
filter made with it). Install them, then build again:
    Debian, Ubuntu:       apt-get install libseccomp-dev
    Fedora, RHEL, Rocky:  dnf install libseccomp-devel
    Alpine:               apk add libseccomp-dev
    Arch:                 pacman -S libseccomp"""


def check_libseccomp(compiler: str) -> None:
    """Stop the build with an install hint unless a program using libseccomp links."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(
                "#include <seccomp.h>\n"
                "int main(void) { scmp_filter_ctx c = seccomp_init(SCMP_ACT_ALLOW); "
                "seccomp_release(c); return 0; }\n"
            )
        probe = [compiler, source, "-o", os.path.join(tmp, "probe"), "-lseccomp"]
        if subprocess.run(probe, capture_output=True).returncode != 0:
            raise SystemExit(LIBSECCOMP_MISSING)


class BuildPrograms(build_ext):
    """Links each extension as a program named like its module, without a suffix."""

    def get_ext_filename(self, fullname: str) -> str:
        return os.path.join(*fullname.split("."))

    def build_extension(self, ext: Extension) -> None:
        check_libseccomp(shutil.which(os.environ.get("CC", "cc")) or "cc")
        objects = self.compiler.compile(
            ext.sources, output_dir=self.build_temp, extra_postargs=ext.extra_compile_args
        )
        self.compiler.link_executable(
            objects, self.get_ext_fullpath(ext.name), libraries=ext.libraries
        )


class ProgramWheel(bdist_wheel):
    """Tags the wheel py3-none-PLATFORM: its one compiled part is a program that loads no
    libpython, so one wheel serves every Python 3 on a platform. PLATFORM is the build
    machine's (linux_x86_64); `make dist` has auditwheel replace it with the manylinux tag
    the program's glibc symbol versions allow. The one library manylinux lacks,
    libseccomp.so.2 (LGPL-2.1), is left out of the wheel: it is the host's, as a dependency
    of the system, and the server names the package to install when it is missing."""

    def get_tag(self) -> tuple[str, str, str]:
        return "py3", "none", super().get_tag()[2]


setup(
    ext_modules=[
        Extension(
            "jobmgr.worker._pid1",
            sources=[f"jobmgr/worker/{name}" for name in SOURCES],
            depends=[
                f"jobmgr/worker/{name}"
                for name in ("_sandbox.h", "_pid1.h", "_view.h", "_mountapi.h")
            ],
            libraries=["seccomp"],
            extra_compile_args=["-O2", *WARNINGS],
        )
    ],
    cmdclass={"build_ext": BuildPrograms, "bdist_wheel": ProgramWheel},
)
