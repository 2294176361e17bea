#!/bin/sh
# Install what lcs-core's tests need (Debian 12): kotlinc, a JDK, Gson and JUnit 4.
# Idempotent: does nothing when they are all present. Needs root (or sudo) only to install.
set -eu
java_dir=/usr/share/java
if command -v kotlinc >/dev/null 2>&1 && command -v java >/dev/null 2>&1 \
    && test -f "$java_dir/gson.jar" && test -f "$java_dir/junit4.jar" && test -f "$java_dir/hamcrest-core.jar"; then
    exit 0
fi
sudo=""
if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
$sudo apt-get update
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    kotlin openjdk-17-jdk-headless libgoogle-gson-java junit4 libhamcrest-java
