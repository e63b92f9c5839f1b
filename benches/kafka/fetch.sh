#!/usr/bin/env bash
# Downloads the Apache Kafka broker (org.apache.kafka:kafka_2.13) and its runtime dependencies
# from Maven Central into a cache directory, for benches/compare.py and the Kafka tests
# (benches/kafka/broker.py runs it on first use).
#
#   bash benches/kafka/fetch.sh [VERSION]        # default 4.2.2; needs mvn and Java 17
#
# Result: $TIDELOG_KAFKA_HOME (default ~/.cache/tidelog-bench/kafka/<VERSION>)/libs/*.jar
# compare.py then runs `java -cp 'libs/*' kafka.Kafka server.properties`. Re-running is a
# no-op once libs/ is complete (a marker file records it).
set -euo pipefail

VERSION="${1:-${TIDELOG_KAFKA_VERSION:-4.2.2}}"
HOME_DIR="${TIDELOG_KAFKA_HOME:-${HOME}/.cache/tidelog-bench/kafka/${VERSION}}"
LIBS="${HOME_DIR}/libs"

if [[ -f "${HOME_DIR}/.complete" ]]; then
    echo "kafka ${VERSION} already fetched: ${LIBS}"
    exit 0
fi
command -v mvn >/dev/null || { echo "mvn not found: apt-get install -y maven" >&2; exit 1; }
command -v java >/dev/null || { echo "java not found: apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }

mkdir -p "${HOME_DIR}"
cat > "${HOME_DIR}/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tidelog.bench</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>${VERSION}</version>
    </dependency>
    <!-- kafka_2.13 leaves the logging backend to the distribution -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>1.7.36</version>
    </dependency>
  </dependencies>
</project>
POM

rm -rf "${LIBS}"
mvn -q -B -f "${HOME_DIR}/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="${LIBS}"
ls "${LIBS}"/kafka_2.13-"${VERSION}".jar >/dev/null
touch "${HOME_DIR}/.complete"
echo "kafka ${VERSION}: $(ls "${LIBS}" | wc -l) jars in ${LIBS}"
