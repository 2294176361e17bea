#!/bin/sh
# Compile the platform-free Kotlin (lcs-core) with Debian's kotlinc and run its JUnit 4 tests.
# No Gradle or Android SDK needed. Env: LCS_SWITCH_ONCE_DIR (optional) points the byte-patching
# test at a bundle and Python's patched bytes (tests/test_policy.py sets it).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
java_dir=/usr/share/java
classpath="$java_dir/gson.jar:$java_dir/junit4.jar:$java_dir/hamcrest-core.jar"
build=${LCS_CORE_BUILD:-"$here/build"}
rm -rf "$build" && mkdir -p "$build"
# kotlinc 1.3 needs the Kotlin runtime on the class path when running with plain java.
kotlinc -nowarn -include-runtime -cp "$classpath" -d "$build/lcs-core-tests.jar" \
    "$here/src/main/kotlin" "$here/src/test/kotlin" 2>&1 | grep -v "^OpenJDK 64-Bit Server VM warning" || true
test -f "$build/lcs-core-tests.jar"
tests=$(cd "$here/src/test/kotlin" && find . -name '*Test.kt' | sed 's|^\./||; s|\.kt$||; s|/|.|g' | sort)
exec java -Dlcs.policyDir="$here/../../policy" -cp "$build/lcs-core-tests.jar:$classpath" org.junit.runner.JUnitCore $tests
