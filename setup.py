"""The one compiled part: the jobs' init and its zygote, a small C program (jobmgr/worker/_pid1*.c).

It is a program, not an extension module: forked from a program that maps little, a job's
slot copies a few page tables, not the launcher's whole Python heap (see _pid1.c). setuptools
builds C only as extension modules, so build_ext is taught to link this one as an executable
named like the module, without a suffix; wheels and editable installs then carry it as they
would an extension.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext

WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers"]


class BuildPrograms(build_ext):
    """Links each extension as a program named like its module, without a suffix."""

    def get_ext_filename(self, fullname: str) -> str:
        return os.path.join(*fullname.split("."))

    def build_extension(self, ext: Extension) -> None:
        objects = self.compiler.compile(
            ext.sources, output_dir=self.build_temp, extra_postargs=ext.extra_compile_args
        )
        self.compiler.link_executable(objects, self.get_ext_fullpath(ext.name))


class ProgramWheel(bdist_wheel):
    """Tags the wheel py3-none-PLATFORM: its one compiled part is a program that loads no
    libpython, so one wheel serves every Python 3 on a platform. PLATFORM is the build
    machine's (linux_x86_64); `make dist` has auditwheel replace it with the manylinux tag
    the program's glibc symbol versions allow (and bring in any library manylinux lacks)."""

    def get_tag(self) -> tuple[str, str, str]:
        return "py3", "none", super().get_tag()[2]


setup(
    ext_modules=[
        Extension(
            "jobmgr.worker._pid1",
            sources=["jobmgr/worker/_pid1.c", "jobmgr/worker/_pid1_supervise.c"],
            depends=["jobmgr/worker/_pid1.h"],
            extra_compile_args=["-O2", *WARNINGS],
        )
    ],
    cmdclass={"build_ext": BuildPrograms, "bdist_wheel": ProgramWheel},
)
